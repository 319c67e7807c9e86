//! Per-organisation quotas on creating exports: how many may be unfinished at once, how many
//! sources may be requested per hour, and how many bytes the organisation may keep stored.
//! Checked when an export is created, against usage read in the create's own transaction.

use std::fmt;
use std::time::Duration;

/// The sliding window of the sources-per-hour quota.
pub const SOURCE_WINDOW: Duration = Duration::from_secs(3600);

/// The limits, each `None` when unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    /// Exports not yet final (`pending` or `running`).
    pub active_exports: Option<u64>,
    /// Sources requested over the last [`SOURCE_WINDOW`].
    pub sources_per_hour: Option<u64>,
    /// Bytes stored: uploaded sources and archives of exports not yet expired or deleted.
    pub stored_bytes: Option<u64>,
}

impl Quotas {
    /// Whether any quota is set (otherwise usage need not be read).
    pub fn any(&self) -> bool {
        self.active_exports.is_some()
            || self.sources_per_hour.is_some()
            || self.stored_bytes.is_some()
    }
}

/// What an organisation uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Its exports not yet final.
    pub active_exports: u64,
    /// Sources it requested in the window.
    pub recent_sources: u64,
    /// How long ago the oldest request still in the window was made.
    pub oldest_recent: Option<Duration>,
    /// Bytes it has stored.
    pub stored_bytes: u64,
}

/// A quota a new export would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    /// Too many exports are unfinished.
    ActiveExports {
        /// The quota.
        limit: u64,
    },
    /// Too many sources were requested in the last hour.
    SourcesPerHour {
        /// The quota.
        limit: u64,
        /// Sources requested in the window.
        used: u64,
        /// Sources this request asks for.
        requested: u64,
        /// When enough of the window will have passed for the oldest request to leave it.
        retry_after: Duration,
    },
    /// The organisation stores too much.
    StoredBytes {
        /// The quota.
        limit: u64,
        /// Bytes stored.
        used: u64,
    },
}

impl QuotaExceeded {
    /// The quota's name, as the metric label and in messages.
    pub fn quota(&self) -> &'static str {
        match self {
            Self::ActiveExports { .. } => "active_exports",
            Self::SourcesPerHour { .. } => "sources_per_hour",
            Self::StoredBytes { .. } => "stored_bytes",
        }
    }

    /// How long the client should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        match self {
            // Exports finish (or time out) within minutes.
            Self::ActiveExports { .. } => Duration::from_secs(30),
            Self::SourcesPerHour { retry_after, .. } => *retry_after,
            // Space comes back when exports expire or are deleted.
            Self::StoredBytes { .. } => SOURCE_WINDOW,
        }
    }
}

impl fmt::Display for QuotaExceeded {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ActiveExports { limit } => write!(
                formatter,
                "quota active_exports exceeded: the organisation has {limit} exports still \
                 pending or running (QUOTA_ACTIVE_EXPORTS); wait for some to finish, or delete \
                 ones no longer needed"
            ),
            Self::SourcesPerHour {
                limit,
                used,
                requested,
                retry_after,
            } => write!(
                formatter,
                "quota sources_per_hour exceeded: the organisation requested {used} sources in \
                 the last hour and this request asks for {requested}, over the quota of {limit} \
                 (QUOTA_SOURCES_PER_HOUR); retry in {} s",
                retry_after.as_secs()
            ),
            Self::StoredBytes { limit, used } => write!(
                formatter,
                "quota stored_bytes exceeded: the organisation stores {used} bytes of exports, \
                 at or over the quota of {limit} (QUOTA_STORED_BYTES); delete exports no longer \
                 needed"
            ),
        }
    }
}

/// Whether a new export of `sources` sources fits `quotas` given `usage`.
pub fn check(quotas: &Quotas, usage: &Usage, sources: u64) -> Result<(), QuotaExceeded> {
    if let Some(limit) = quotas.active_exports
        && usage.active_exports >= limit
    {
        return Err(QuotaExceeded::ActiveExports { limit });
    }
    if let Some(limit) = quotas.sources_per_hour
        && usage.recent_sources + sources > limit
    {
        let waited = usage.oldest_recent.unwrap_or_default();
        return Err(QuotaExceeded::SourcesPerHour {
            limit,
            used: usage.recent_sources,
            requested: sources,
            retry_after: SOURCE_WINDOW
                .saturating_sub(waited)
                .max(Duration::from_secs(1)),
        });
    }
    if let Some(limit) = quotas.stored_bytes
        && usage.stored_bytes >= limit
    {
        return Err(QuotaExceeded::StoredBytes {
            limit,
            used: usage.stored_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Quotas = Quotas {
        active_exports: Some(3),
        sources_per_hour: Some(10),
        stored_bytes: Some(1000),
    };

    #[test]
    fn within_every_quota_passes() {
        let usage = Usage {
            active_exports: 2,
            recent_sources: 7,
            oldest_recent: Some(Duration::from_secs(60)),
            stored_bytes: 999,
        };
        assert_eq!(check(&ALL, &usage, 3), Ok(()));
        assert_eq!(
            check(
                &Quotas::default(),
                &Usage {
                    active_exports: u64::MAX,
                    recent_sources: u64::MAX / 2,
                    oldest_recent: None,
                    stored_bytes: u64::MAX,
                },
                100
            ),
            Ok(()),
            "no quota, no limit"
        );
        assert!(!Quotas::default().any());
        assert!(ALL.any());
    }

    #[test]
    fn each_quota_refuses_at_its_limit_with_its_name() {
        let at = |usage: Usage, sources| check(&ALL, &usage, sources).unwrap_err();
        let active = at(
            Usage {
                active_exports: 3,
                ..Usage::default()
            },
            1,
        );
        assert_eq!(active.quota(), "active_exports");
        assert!(
            active.to_string().contains("QUOTA_ACTIVE_EXPORTS"),
            "{active}"
        );

        let hourly = at(
            Usage {
                recent_sources: 8,
                oldest_recent: Some(Duration::from_secs(3000)),
                ..Usage::default()
            },
            3,
        );
        assert_eq!(hourly.quota(), "sources_per_hour");
        assert_eq!(
            hourly.retry_after(),
            Duration::from_secs(600),
            "when the oldest leaves"
        );
        assert!(
            hourly.to_string().contains("requested 8 sources"),
            "{hourly}"
        );

        let stored = at(
            Usage {
                stored_bytes: 1000,
                ..Usage::default()
            },
            1,
        );
        assert_eq!(stored.quota(), "stored_bytes");
        assert!(stored.to_string().contains("1000 bytes"), "{stored}");
    }

    #[test]
    fn the_hourly_retry_is_never_zero() {
        let usage = Usage {
            recent_sources: 10,
            oldest_recent: Some(Duration::from_secs(4000)),
            ..Usage::default()
        };
        assert_eq!(
            check(&ALL, &usage, 1).unwrap_err().retry_after(),
            Duration::from_secs(1)
        );
    }
}
