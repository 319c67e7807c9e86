//! A binding's own plugin limits: an interpreter-based plugin (Python, JavaScript) needs more
//! memory and time per call than a Rust one, so a binding's configuration may raise (or lower)
//! the replica's defaults for its sessions, within ceilings the replica can afford.
//!
//! Given as `"limits": {"memory_mib": 96, "call_timeout_ms": 5000}` in the binding's
//! configuration (plugins ignore configuration keys they do not know, as with `"schema"`).

use std::time::Duration;

use serde::Deserialize;

const MIB: u64 = 1024 * 1024;

/// The limits a binding asks for; what it leaves out keeps the replica's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingLimits {
    /// Linear memory of one session, in MiB.
    pub memory_mib: Option<u64>,
    /// Time one call may run, in milliseconds.
    pub call_timeout_ms: Option<u64>,
}

/// The most a binding may ask for on this replica: memory up to what the upload slots can
/// lend one upload, a call up to the whole session's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitCeilings {
    /// The most linear memory one session may be given, in bytes.
    pub memory_bytes: u64,
    /// The longest one call may be given.
    pub call_timeout: Duration,
}

/// The shortest call time a binding may set: below it, a plugin's first instructions race the
/// deadline's granularity.
pub const MIN_CALL_TIMEOUT: Duration = Duration::from_millis(50);

/// Why a binding's `"limits"` are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// Not of the expected shape.
    #[error(
        "\"limits\" must be an object with \"memory_mib\" and/or \"call_timeout_ms\" (whole \
         numbers): {0}"
    )]
    Shape(String),
    /// More memory than this replica can lend.
    #[error(
        "\"limits\".\"memory_mib\" is {asked}; a session may have 1 to {ceiling} MiB on this \
         service (the upload slots' memory; raise MAX_CONCURRENT_UPLOADS or PLUGIN_MEMORY_LIMIT \
         to allow more)"
    )]
    Memory {
        /// What was asked.
        asked: u64,
        /// The ceiling, in MiB.
        ceiling: u64,
    },
    /// A call time outside what the service allows.
    #[error(
        "\"limits\".\"call_timeout_ms\" is {asked}; a call may be given {min} to {ceiling} ms \
         (PLUGIN_SESSION_TIMEOUT bounds it)"
    )]
    CallTimeout {
        /// What was asked.
        asked: u64,
        /// The shortest allowed.
        min: u64,
        /// The longest allowed.
        ceiling: u64,
    },
}

impl BindingLimits {
    /// The `"limits"` of a binding's configuration (none when it has no such key).
    pub fn from_config(config: &serde_json::Value) -> Result<Self, LimitsError> {
        match config.get("limits") {
            None => Ok(Self::default()),
            Some(limits) => serde_json::from_value(limits.clone())
                .map_err(|error| LimitsError::Shape(error.to_string())),
        }
    }

    /// Refuses limits above `ceilings` (at bind time, so an operator hears it at once).
    pub fn check(&self, ceilings: &LimitCeilings) -> Result<(), LimitsError> {
        if let Some(asked) = self.memory_mib {
            let ceiling = ceilings.memory_bytes / MIB;
            if asked == 0 || asked > ceiling {
                return Err(LimitsError::Memory { asked, ceiling });
            }
        }
        if let Some(asked) = self.call_timeout_ms {
            let min = MIN_CALL_TIMEOUT.as_millis() as u64;
            let ceiling = ceilings.call_timeout.as_millis() as u64;
            if asked < min || asked > ceiling {
                return Err(LimitsError::CallTimeout {
                    asked,
                    min,
                    ceiling,
                });
            }
        }
        Ok(())
    }

    /// The memory a session gets: the binding's, within the ceiling, else `default`.
    pub fn memory_bytes(&self, default: u64, ceilings: &LimitCeilings) -> u64 {
        self.memory_mib.map_or(default, |mib| {
            mib.saturating_mul(MIB).clamp(MIB, ceilings.memory_bytes)
        })
    }

    /// The time a call gets: the binding's, within the allowed range, else `default`.
    pub fn call_timeout(&self, default: Duration, ceilings: &LimitCeilings) -> Duration {
        self.call_timeout_ms.map_or(default, |ms| {
            Duration::from_millis(ms).clamp(MIN_CALL_TIMEOUT, ceilings.call_timeout)
        })
    }
}

/// How many upload slots a session with `memory_bytes` of plugin memory holds: its own, plus
/// as many more as its memory above the `default` the slot budget assumed takes.
pub fn slots_for(memory_bytes: u64, default: u64, slot_bytes: u64) -> usize {
    let extra = memory_bytes.saturating_sub(default);
    1 + usize::try_from(extra.div_ceil(slot_bytes.max(1))).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CEILINGS: LimitCeilings = LimitCeilings {
        memory_bytes: 160 * MIB,
        call_timeout: Duration::from_secs(300),
    };

    #[test]
    fn limits_come_from_the_configuration_and_default_when_absent() {
        assert_eq!(
            BindingLimits::from_config(&json!({"schema": {}})),
            Ok(BindingLimits::default())
        );
        let limits = BindingLimits::from_config(
            &json!({"limits": {"memory_mib": 96, "call_timeout_ms": 5000}}),
        )
        .unwrap();
        assert_eq!(limits.memory_bytes(32 * MIB, &CEILINGS), 96 * MIB);
        assert_eq!(
            limits.call_timeout(Duration::from_secs(2), &CEILINGS),
            Duration::from_secs(5)
        );
        let none = BindingLimits::default();
        assert_eq!(none.memory_bytes(32 * MIB, &CEILINGS), 32 * MIB);
        assert_eq!(
            none.call_timeout(Duration::from_secs(2), &CEILINGS),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn malformed_limits_say_what_shape_is_expected() {
        for config in [
            json!({"limits": 5}),
            json!({"limits": {"memory": 5}}),
            json!({"limits": {"memory_mib": -1}}),
            json!({"limits": {"memory_mib": "96"}}),
        ] {
            let error = BindingLimits::from_config(&config).unwrap_err();
            assert!(error.to_string().contains("memory_mib"), "{error}");
        }
    }

    #[test]
    fn limits_beyond_the_ceilings_are_refused_naming_the_range_and_capped_at_run_time() {
        let greedy = BindingLimits {
            memory_mib: Some(161),
            call_timeout_ms: None,
        };
        let error = greedy.check(&CEILINGS).unwrap_err();
        assert_eq!(
            error,
            LimitsError::Memory {
                asked: 161,
                ceiling: 160
            }
        );
        assert!(error.to_string().contains("1 to 160 MiB"), "{error}");
        assert_eq!(greedy.memory_bytes(32 * MIB, &CEILINGS), 160 * MIB);
        for asked in [0, 10, 300_001] {
            let timed = BindingLimits {
                memory_mib: None,
                call_timeout_ms: Some(asked),
            };
            assert!(matches!(
                timed.check(&CEILINGS),
                Err(LimitsError::CallTimeout { .. })
            ));
        }
        assert_eq!(
            BindingLimits {
                memory_mib: Some(0),
                call_timeout_ms: None
            }
            .check(&CEILINGS),
            Err(LimitsError::Memory {
                asked: 0,
                ceiling: 160
            })
        );
        assert!(
            BindingLimits {
                memory_mib: Some(160),
                call_timeout_ms: Some(300_000)
            }
            .check(&CEILINGS)
            .is_ok()
        );
    }

    #[test]
    fn memory_above_the_default_takes_whole_extra_slots() {
        let slot = 50 * MIB;
        assert_eq!(slots_for(32 * MIB, 32 * MIB, slot), 1);
        assert_eq!(slots_for(16 * MIB, 32 * MIB, slot), 1);
        assert_eq!(slots_for(33 * MIB, 32 * MIB, slot), 2);
        assert_eq!(slots_for(82 * MIB, 32 * MIB, slot), 2);
        assert_eq!(slots_for(83 * MIB, 32 * MIB, slot), 3);
    }
}
