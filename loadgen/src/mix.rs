//! The scenario mix: README's demo scenarios, each reached with plain CreateOrder
//! inputs through the fixtures, and a weighted mix of them (`success=90,card_declined=10`).
//!
//! The scenario of saga `i` is a pure function of the seed and `i` (a hash, not a
//! shared random generator), so a closed-loop run of unknown length, an open-loop
//! run and the baseline all see the same sequence, and no worker waits on a lock
//! to draw one.

use std::{collections::BTreeMap, fmt, str::FromStr};

pub use scenarios::Scenario;

impl From<scenarios::UnknownScenario> for MixError {
    fn from(unknown: scenarios::UnknownScenario) -> Self {
        MixError::UnknownScenario(unknown.0)
    }
}

/// Why a `--mix` argument is not a mix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MixError {
    UnknownScenario(String),
    NotAPair(String),
    BadWeight(String),
    Duplicate(&'static str),
    Empty,
}

impl fmt::Display for MixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.as_str()).collect();
        match self {
            MixError::UnknownScenario(name) => write!(f, "unknown scenario {name:?} (one of {})", names.join(", ")),
            MixError::NotAPair(part) => write!(f, "{part:?} is not name=weight"),
            MixError::BadWeight(part) => write!(f, "{part:?}: the weight must be a whole number"),
            MixError::Duplicate(name) => write!(f, "scenario {name} is given twice"),
            MixError::Empty => write!(f, "the weights add up to zero"),
        }
    }
}

impl std::error::Error for MixError {}

/// Weighted scenarios, e.g. `success=90,card_declined=10`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Scenario, u32)>,
    total: u64,
}

impl Mix {
    /// One scenario only.
    pub fn only(scenario: Scenario) -> Self {
        Self { weights: vec![(scenario, 1)], total: 1 }
    }

    /// The scenario of saga `index` under `seed`: drawn with the weights by a hash
    /// of both, so the same seed and index always give the same scenario.
    pub fn pick(&self, seed: u64, index: u64) -> Scenario {
        let mut ticket = splitmix64(seed ^ splitmix64(index)) % self.total;
        for (scenario, weight) in &self.weights {
            if ticket < u64::from(*weight) {
                return *scenario;
            }
            ticket -= u64::from(*weight);
        }
        // Unreachable: the weights add up to `total`.
        self.weights[0].0
    }

    /// Each scenario's share in percent (for reports).
    pub fn percentages(&self) -> BTreeMap<String, f64> {
        self.weights
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|(s, w)| (s.as_str().to_owned(), 100.0 * f64::from(*w) / self.total as f64))
            .collect()
    }
}

impl Default for Mix {
    fn default() -> Self {
        Self::only(Scenario::Success)
    }
}

impl FromStr for Mix {
    type Err = MixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights: Vec<(Scenario, u32)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| MixError::NotAPair(part.to_owned()))?;
            let scenario: Scenario = name.parse()?;
            let weight: u32 = weight.trim().parse().map_err(|_| MixError::BadWeight(part.to_owned()))?;
            if weights.iter().any(|(s, _)| *s == scenario) {
                return Err(MixError::Duplicate(scenario.as_str()));
            }
            weights.push((scenario, weight));
        }
        let total: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return Err(MixError::Empty);
        }
        Ok(Self { weights, total })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.weights.iter().map(|(s, w)| format!("{}={w}", s.as_str())).collect();
        write!(f, "{}", parts.join(","))
    }
}

/// A well-mixing 64-bit hash (SplitMix64's finaliser).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_parses_names_and_weights() {
        let mix: Mix = "success=90, card_declined=10".parse().expect("valid mix");
        assert_eq!(mix.to_string(), "success=90,card_declined=10");
        assert_eq!(mix.percentages().get("success"), Some(&90.0));
        assert_eq!(mix.percentages().get("card_declined"), Some(&10.0));
    }

    #[test]
    fn a_bad_mix_says_what_is_wrong() {
        assert_eq!("nope=1".parse::<Mix>(), Err(MixError::UnknownScenario("nope".into())));
        assert_eq!("success".parse::<Mix>(), Err(MixError::NotAPair("success".into())));
        assert_eq!("success=x".parse::<Mix>(), Err(MixError::BadWeight("success=x".into())));
        assert_eq!("success=1,success=2".parse::<Mix>(), Err(MixError::Duplicate("success")));
        assert_eq!("success=0".parse::<Mix>(), Err(MixError::Empty));
        assert_eq!("".parse::<Mix>(), Err(MixError::Empty));
    }

    #[test]
    fn picks_follow_the_weights_and_depend_only_on_seed_and_index() {
        let mix: Mix = "success=90,card_declined=10".parse().expect("valid mix");
        let picks: Vec<Scenario> = (0..10_000).map(|i| mix.pick(7, i)).collect();
        let declined = picks.iter().filter(|s| **s == Scenario::CardDeclined).count();
        assert!((800..1200).contains(&declined), "{declined} of 10000 declined, expected about 1000");
        assert!(picks.iter().all(|s| matches!(s, Scenario::Success | Scenario::CardDeclined)));
        assert_eq!(picks, (0..10_000).map(|i| mix.pick(7, i)).collect::<Vec<_>>());
        assert_ne!(picks, (0..10_000).map(|i| mix.pick(8, i)).collect::<Vec<_>>());
    }

    #[test]
    fn each_scenario_asks_for_its_readme_input() {
        let r = Scenario::OverLimit.request(String::new());
        assert_eq!((r.consumer_id, r.restaurant_id, r.items[0].quantity), (1, 1, 40));
        assert_eq!(Scenario::ConsumerRejected.request(String::new()).consumer_id, 2);
        assert_eq!(Scenario::FlakyKitchen.request(String::new()).restaurant_id, 2);
        assert_eq!(Scenario::FlakyKitchen.expected_state(), "APPROVED");
        assert_eq!(Scenario::CardDeclined.expected_state(), "REJECTED");
    }
}
