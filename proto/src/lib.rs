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
