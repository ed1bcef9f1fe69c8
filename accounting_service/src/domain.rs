//! The accounting domain without I/O: accounts and their fixture file,
//! authorizations, the checks AuthorizeCard makes before it touches any state, and
//! the outcomes stored under message ids. Kept pure so it is unit-tested here.
//!
//! An account's credit limit is the largest amount ONE authorization may take. The
//! demo does not model settlement, so authorizations do not use up the limit and
//! repeated demo orders keep working.

use std::collections::{HashMap, HashSet};

use proto::{
    accounting::v1 as pb,
    common::v1::{Failure, Money},
};
use serde::{Deserialize, Serialize};

/// Failure code: the consumer has no account.
pub const ACCOUNT_NOT_FOUND: &str = "ACCOUNT_NOT_FOUND";
/// Failure code: the amount is missing, not positive, or not in the account's currency.
pub const INVALID_AMOUNT: &str = "INVALID_AMOUNT";
/// Failure code: the amount is above the card's credit limit.
pub const CARD_DECLINED: &str = "CARD_DECLINED";
/// Failure code: a VoidAuthorization for the order came first (tombstone).
pub const AUTHORIZATION_VOIDED: &str = "AUTHORIZATION_VOIDED";

/// A consumer's account, as stored in Redis (JSON) and in the fixture file.
/// Amounts are minor units of [`Money::CURRENCY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub consumer_id: i64,
    /// Masked card number, e.g. `**** 4242`.
    pub card: String,
    /// The largest amount one authorization may take.
    pub credit_limit_minor: i64,
}

impl From<Account> for pb::Account {
    fn from(account: Account) -> Self {
        Self {
            consumer_id: account.consumer_id,
            card: account.card,
            credit_limit: Some(Money::usd(account.credit_limit_minor)),
        }
    }
}

/// The fixture file's data is not usable.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("fixture file is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("consumer_id must be 1 or more, found {0}")]
    InvalidId(i64),
    #[error("account of consumer {0} appears more than once")]
    Duplicate(i64),
    #[error("account of consumer {0} has an empty card")]
    EmptyCard(i64),
    #[error("account of consumer {0} has a negative credit limit")]
    NegativeLimit(i64),
}

/// The accounts loaded into Redis at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Fixtures {
    pub accounts: Vec<Account>,
}

/// The fixture file compiled into the binary (`fixtures/accounts.json`).
pub const BUILTIN_FIXTURES: &str = include_str!("../fixtures/accounts.json");

impl Fixtures {
    /// Parses and validates fixture JSON (unknown top-level fields such as
    /// `description` are ignored).
    pub fn parse(json: &str) -> Result<Self, FixtureError> {
        let fixtures: Self = serde_json::from_str(json)?;
        let mut seen = HashSet::new();
        for account in &fixtures.accounts {
            let id = account.consumer_id;
            if id <= 0 {
                return Err(FixtureError::InvalidId(id));
            }
            if !seen.insert(id) {
                return Err(FixtureError::Duplicate(id));
            }
            if account.card.trim().is_empty() {
                return Err(FixtureError::EmptyCard(id));
            }
            if account.credit_limit_minor < 0 {
                return Err(FixtureError::NegativeLimit(id));
            }
        }
        Ok(fixtures)
    }

    /// The built-in fixtures.
    pub fn builtin() -> Result<Self, FixtureError> {
        Self::parse(BUILTIN_FIXTURES)
    }
}

/// Minor units as a decimal amount with two places: `1234` is `12.34`.
pub fn format_minor(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Why AuthorizeCard is refused before any state is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// The checks of AuthorizeCard against the account (fixture data, immutable while
/// the service runs): the account exists, the amount is positive and in USD, and
/// within the credit limit. Returns the amount in minor units.
pub fn check_authorization(
    consumer_id: i64,
    account: Option<&Account>,
    amount: Option<&Money>,
) -> Result<i64, Refusal> {
    let Some(account) = account else {
        return Err(Refusal { code: ACCOUNT_NOT_FOUND, message: format!("consumer {consumer_id} has no account") });
    };
    let Some(amount) = amount else {
        return Err(Refusal { code: INVALID_AMOUNT, message: "the command has no amount".into() });
    };
    if amount.currency_code != Money::CURRENCY {
        return Err(Refusal {
            code: INVALID_AMOUNT,
            message: format!("currency {:?} is not supported (only {})", amount.currency_code, Money::CURRENCY),
        });
    }
    if amount.amount_minor <= 0 {
        return Err(Refusal {
            code: INVALID_AMOUNT,
            message: format!("amount {} {} is not positive", format_minor(amount.amount_minor), Money::CURRENCY),
        });
    }
    if amount.amount_minor > account.credit_limit_minor {
        return Err(Refusal {
            code: CARD_DECLINED,
            message: format!(
                "card {} declined: amount {} {cur} is above the credit limit {} {cur}",
                account.card,
                format_minor(amount.amount_minor),
                format_minor(account.credit_limit_minor),
                cur = Money::CURRENCY,
            ),
        });
    }
    Ok(amount.amount_minor)
}

/// The state of an authorization; stored as these exact strings (the Lua scripts
/// compare them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationState {
    Authorized,
    Voided,
}

impl AuthorizationState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "AUTHORIZED",
            Self::Voided => "VOIDED",
        }
    }

    /// Reads the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "AUTHORIZED" => Some(Self::Authorized),
            "VOIDED" => Some(Self::Voided),
            _ => None,
        }
    }
}

/// An authorization of an order's total on a consumer's card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub authorization_id: String,
    pub order_id: String,
    pub consumer_id: i64,
    pub amount_minor: i64,
    pub currency_code: String,
    pub state: AuthorizationState,
}

impl Authorization {
    /// Reads an authorization from its Redis hash (written by `authorize.lua`);
    /// the error names what is missing or wrong.
    pub fn from_hash(fields: &HashMap<String, String>) -> Result<Self, String> {
        let field = |name: &str| fields.get(name).cloned().ok_or_else(|| format!("missing field {name}"));
        let number = |name: &str| -> Result<i64, String> {
            field(name)?.parse().map_err(|e| format!("field {name} is not an integer: {e}"))
        };
        let state = field("state")?;
        Ok(Self {
            authorization_id: field("authorization_id")?,
            order_id: field("order_id")?,
            consumer_id: number("consumer_id")?,
            amount_minor: number("amount_minor")?,
            currency_code: field("currency_code")?,
            state: AuthorizationState::parse(&state).ok_or_else(|| format!("unknown state {state:?}"))?,
        })
    }
}

impl From<Authorization> for pb::Authorization {
    fn from(a: Authorization) -> Self {
        let state = match a.state {
            AuthorizationState::Authorized => pb::AuthorizationState::Authorized,
            AuthorizationState::Voided => pb::AuthorizationState::Voided,
        };
        Self {
            authorization_id: a.authorization_id,
            order_id: a.order_id,
            consumer_id: a.consumer_id,
            amount: Some(Money { amount_minor: a.amount_minor, currency_code: a.currency_code }),
            state: state as i32,
        }
    }
}

/// What AuthorizeCard decided, stored as JSON under the command's message id. The
/// Lua script writes the same shape (`{"result":"authorized",...}`) with cjson.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AuthorizeOutcome {
    Authorized { authorization_id: String },
    Failed { code: String, message: String },
}

impl From<Refusal> for AuthorizeOutcome {
    fn from(refusal: Refusal) -> Self {
        Self::Failed { code: refusal.code.to_owned(), message: refusal.message }
    }
}

impl AuthorizeOutcome {
    /// The reply this outcome is sent as.
    pub fn into_reply(self) -> pb::AuthorizeCardReply {
        use pb::authorize_card_reply::Outcome;
        let outcome = match self {
            Self::Authorized { authorization_id } => Outcome::Success(pb::CardAuthorized { authorization_id }),
            Self::Failed { code, message } => Outcome::Failure(Failure::business(&code, message)),
        };
        pb::AuthorizeCardReply { outcome: Some(outcome) }
    }
}

/// What VoidAuthorization did, stored as JSON under the command's message id
/// (written by `void.lua`). It always succeeds; the id is empty when there was no
/// authorization in force (an empty rollback: only the tombstone was written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum VoidOutcome {
    Voided { authorization_id: String },
}

impl VoidOutcome {
    /// The reply this outcome is sent as.
    pub fn into_reply(self) -> pb::VoidAuthorizationReply {
        use pb::void_authorization_reply::Outcome;
        let Self::Voided { authorization_id } = self;
        pb::VoidAuthorizationReply { outcome: Some(Outcome::Success(pb::AuthorizationVoided { authorization_id })) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_failure_codes_are_the_ones_the_proto_contract_lists() {
        let checked = test_support::assert_failure_codes_listed::<pb::AuthorizeCardReply>(
            &[ACCOUNT_NOT_FOUND, INVALID_AMOUNT, CARD_DECLINED, AUTHORIZATION_VOIDED],
            &[include_str!("lua/authorize.lua")],
        );
        // Four constants and the script's spelling of the tombstone's refusal.
        assert_eq!(checked, 5);
        // VoidAuthorization never fails: its script spells no code.
        let void = test_support::assert_failure_codes_listed::<pb::VoidAuthorizationReply>(
            &[],
            &[include_str!("lua/void.lua")],
        );
        assert_eq!(void, 0);
    }

    fn account(limit: i64) -> Account {
        Account { consumer_id: 3, card: "**** 0005".into(), credit_limit_minor: limit }
    }

    #[test]
    fn builtin_fixtures_hold_the_demo_accounts() {
        let fixtures = Fixtures::builtin().expect("built-in fixtures parse");
        let summary: Vec<_> =
            fixtures.accounts.iter().map(|a| (a.consumer_id, a.card.as_str(), a.credit_limit_minor)).collect();
        assert_eq!(summary, vec![(1, "**** 4242", 100_000), (2, "**** 1881", 100_000), (3, "**** 0005", 2_000)]);
    }

    #[test]
    fn fixtures_with_a_duplicate_id_or_a_negative_limit_are_refused() {
        let dup = r#"{"accounts":[{"consumer_id":1,"card":"a","credit_limit_minor":1},{"consumer_id":1,"card":"b","credit_limit_minor":1}]}"#;
        assert!(matches!(Fixtures::parse(dup), Err(FixtureError::Duplicate(1))));
        let negative = r#"{"accounts":[{"consumer_id":1,"card":"a","credit_limit_minor":-1}]}"#;
        assert!(matches!(Fixtures::parse(negative), Err(FixtureError::NegativeLimit(1))));
        let card = r#"{"accounts":[{"consumer_id":1,"card":"","credit_limit_minor":1}]}"#;
        assert!(matches!(Fixtures::parse(card), Err(FixtureError::EmptyCard(1))));
        assert!(matches!(Fixtures::parse("{}"), Err(FixtureError::Json(_))));
    }

    #[test]
    fn minor_units_print_with_two_decimals() {
        assert_eq!(format_minor(1234), "12.34");
        assert_eq!(format_minor(2000), "20.00");
        assert_eq!(format_minor(5), "0.05");
        assert_eq!(format_minor(-105), "-1.05");
        assert_eq!(format_minor(100_000), "1000.00");
    }

    #[test]
    fn an_amount_within_the_limit_passes_and_the_limit_itself_is_allowed() {
        assert_eq!(check_authorization(3, Some(&account(2000)), Some(&Money::usd(2000))), Ok(2000));
        assert_eq!(check_authorization(3, Some(&account(2000)), Some(&Money::usd(1))), Ok(1));
    }

    #[test]
    fn an_amount_above_the_limit_is_declined_with_both_amounts_in_the_message() {
        let refusal = check_authorization(3, Some(&account(2000)), Some(&Money::usd(2501))).expect_err("declined");
        assert_eq!(refusal.code, CARD_DECLINED);
        assert!(refusal.message.contains("25.01") && refusal.message.contains("20.00"), "{}", refusal.message);
    }

    #[test]
    fn a_missing_account_comes_before_a_bad_amount() {
        let refusal = check_authorization(9, None, Some(&Money::usd(0))).expect_err("refused");
        assert_eq!(refusal.code, ACCOUNT_NOT_FOUND);
    }

    #[test]
    fn a_zero_negative_missing_or_foreign_amount_is_invalid() {
        let acc = account(2000);
        for amount in [
            Some(Money::usd(0)),
            Some(Money::usd(-5)),
            None,
            Some(Money { amount_minor: 5, currency_code: "EUR".into() }),
        ] {
            let refusal = check_authorization(3, Some(&acc), amount.as_ref()).expect_err("invalid");
            assert_eq!(refusal.code, INVALID_AMOUNT, "{amount:?}");
        }
    }

    #[test]
    fn an_authorization_is_read_back_from_its_hash() {
        let fields: HashMap<String, String> = [
            ("authorization_id", "a-1"),
            ("order_id", "o-1"),
            ("consumer_id", "3"),
            ("amount_minor", "1500"),
            ("currency_code", "USD"),
            ("state", "VOIDED"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let authorization = Authorization::from_hash(&fields).expect("valid hash");
        assert_eq!(authorization.state, AuthorizationState::Voided);
        assert_eq!(authorization.amount_minor, 1500);
        assert!(Authorization::from_hash(&HashMap::new()).is_err());
    }

    #[test]
    fn outcomes_written_by_lua_parse_into_the_rust_types() {
        let authorized: AuthorizeOutcome =
            serde_json::from_str(r#"{"result":"authorized","authorization_id":"a-1"}"#).expect("parses");
        assert_eq!(authorized, AuthorizeOutcome::Authorized { authorization_id: "a-1".into() });
        let voided: VoidOutcome = serde_json::from_str(r#"{"authorization_id":"","result":"voided"}"#).expect("parses");
        assert_eq!(voided, VoidOutcome::Voided { authorization_id: String::new() });
    }
}
