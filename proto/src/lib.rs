//! The FTGO contract, generated from `proto/ftgo/**`: the gRPC services of the four
//! services and every saga command and reply. Sender and handler share these types,
//! so the wire format is defined once.
//!
//! [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set of all files, served by gRPC
//! reflection so grpcurl needs no `.proto` files, and read by [`contract`]: the
//! queue of every saga message is a custom option in the `.proto` files.
#![forbid(unsafe_code)]
#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

/// Encoded `FileDescriptorSet` of every FTGO proto file (with source info).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ftgo_descriptor.bin"));

pub mod contract;

pub mod messaging {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ftgo.messaging.v1.rs"));
    }
}
pub mod common {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ftgo.common.v1.rs"));
    }
}
pub mod consumer {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ftgo.consumer.v1.rs"));
    }
}
pub mod restaurant {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ftgo.restaurant.v1.rs"));
    }
}
pub mod accounting {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ftgo.accounting.v1.rs"));
    }
}
pub mod order {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ftgo.order.v1.rs"));
    }
}

/// The `type` property of a message on the wire: its fully-qualified protobuf name.
pub fn type_name<M: prost::Name>() -> String {
    M::full_name()
}

/// A message's fully-qualified protobuf name, kept as its package and name so that
/// a `type` property is compared with it in place: every command and reply is
/// dispatched by such a test, and `M::full_name()` would build a `String` for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeName {
    pub package: &'static str,
    pub name: &'static str,
}

impl TypeName {
    pub fn of<M: prost::Name>() -> Self {
        Self { package: M::PACKAGE, name: M::NAME }
    }

    /// Whether `type_name` (a message's `type` property) is this name.
    pub fn matches(self, type_name: &str) -> bool {
        if self.package.is_empty() {
            return type_name == self.name;
        }
        type_name.strip_prefix(self.package).and_then(|rest| rest.strip_prefix('.')) == Some(self.name)
    }
}

impl std::fmt::Display for TypeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.package.is_empty() { f.write_str(self.name) } else { write!(f, "{}.{}", self.package, self.name) }
    }
}

/// Whether `type_name` (a message's `type` property) is `M`'s fully-qualified name.
pub fn is_type<M: prost::Name>(type_name: &str) -> bool {
    TypeName::of::<M>().matches(type_name)
}

impl common::v1::Money {
    /// The only currency of the demo.
    pub const CURRENCY: &'static str = "USD";

    /// Money in the demo currency from minor units.
    pub fn usd(amount_minor: i64) -> Self {
        Self { amount_minor, currency_code: Self::CURRENCY.to_owned() }
    }
}

impl common::v1::Failure {
    /// A business failure: retrying the same command would fail the same way.
    pub fn business(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into(), transient: false }
    }

    /// A transient failure: the orchestrator retries the command with backoff.
    pub fn transient(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into(), transient: true }
    }
}

#[cfg(test)]
mod tests {
    use prost::Name;

    use super::*;

    /// `is_type` agrees with `full_name` on every saga message and refuses near misses.
    #[test]
    fn is_type_matches_the_full_name_only() {
        fn check<M: Name>() {
            let full = M::full_name();
            assert_eq!(TypeName::of::<M>().to_string(), full);
            assert!(is_type::<M>(&full), "{full}");
            for near in [
                format!("{full}X"),
                format!("x{full}"),
                full.replacen('.', "", 1),
                full.rsplit_once('.').map(|(package, _)| package.to_owned()).unwrap_or_default(),
                M::NAME.to_owned(),
                String::new(),
            ] {
                assert!(!is_type::<M>(&near), "{near:?} taken for {full}");
            }
        }
        check::<consumer::v1::VerifyConsumerCommand>();
        check::<consumer::v1::VerifyConsumerReply>();
        check::<restaurant::v1::CreateTicketCommand>();
        check::<restaurant::v1::CreateTicketReply>();
        check::<restaurant::v1::RejectTicketCommand>();
        check::<restaurant::v1::RejectTicketReply>();
        check::<restaurant::v1::ApproveTicketCommand>();
        check::<restaurant::v1::ApproveTicketReply>();
        check::<accounting::v1::AuthorizeCardCommand>();
        check::<accounting::v1::AuthorizeCardReply>();
        check::<accounting::v1::VoidAuthorizationCommand>();
        check::<accounting::v1::VoidAuthorizationReply>();
        assert!(!is_type::<consumer::v1::VerifyConsumerReply>(&consumer::v1::VerifyConsumerCommand::full_name()));
    }
}
