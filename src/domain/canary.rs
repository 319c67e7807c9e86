//! Canary rollouts of a plugin version: which tenants a canary takes (a stable hash of their
//! `org_id` under a share, or a list), and when its failures call for an automatic rollback.

use sha2::{Digest, Sha256};

use super::ids::OrgId;

/// Which tenants a canary takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryAudience {
    /// Percentage of organisations (0–100), by [`bucket`].
    pub share_percent: u8,
    /// Organisations taken whatever their bucket.
    pub org_ids: Vec<OrgId>,
}

/// The bucket (0–99) an organisation falls in: the same on every replica and every release, so
/// a tenant stays in or out of a canary of a given share, and a wider share keeps those of a
/// narrower one.
pub fn bucket(org: &OrgId) -> u8 {
    let digest = Sha256::digest(org.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 100) as u8
}

impl CanaryAudience {
    /// Whether the canary takes the uploads of `org`.
    pub fn takes(&self, org: &OrgId) -> bool {
        self.org_ids.contains(org) || bucket(org) < self.share_percent
    }
}

/// When a canary is rolled back by itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanaryPolicy {
    /// How much the canary's failure rate may exceed the stable version's (0–1).
    pub max_failure_rate: f64,
    /// Uploads the canary must have processed before it is judged.
    pub min_uploads: u64,
}

/// What a canary and the stable version it is compared with have done since it started.
/// Failures are the plugin's own (traps, deadlines, memory, output limits), not data the plugin
/// rightly rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CanaryCounts {
    /// Uploads the canary processed.
    pub canary_uploads: u64,
    /// Of those, the ones where the plugin failed.
    pub canary_failures: u64,
    /// Uploads the stable version processed meanwhile (same application and resource).
    pub stable_uploads: u64,
    /// Of those, the ones where the plugin failed.
    pub stable_failures: u64,
}

fn rate(failures: u64, uploads: u64) -> f64 {
    if uploads == 0 {
        0.0
    } else {
        failures as f64 / uploads as f64
    }
}

/// Why the canary must be rolled back, or `None` while it may go on.
pub fn judge(counts: CanaryCounts, policy: CanaryPolicy) -> Option<String> {
    if counts.canary_uploads < policy.min_uploads.max(1) {
        return None;
    }
    let canary = rate(counts.canary_failures, counts.canary_uploads);
    let stable = rate(counts.stable_failures, counts.stable_uploads);
    (canary > stable + policy.max_failure_rate).then(|| {
        format!(
            "the canary failed {}/{} uploads ({:.0} %) against the stable version's {}/{} \
             ({:.0} %); more than {:.0} points above it is rolled back",
            counts.canary_failures,
            counts.canary_uploads,
            canary * 100.0,
            counts.stable_failures,
            counts.stable_uploads,
            stable * 100.0,
            policy.max_failure_rate * 100.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CanaryPolicy = CanaryPolicy {
        max_failure_rate: 0.1,
        min_uploads: 5,
    };

    fn counts(canary: (u64, u64), stable: (u64, u64)) -> CanaryCounts {
        CanaryCounts {
            canary_failures: canary.0,
            canary_uploads: canary.1,
            stable_failures: stable.0,
            stable_uploads: stable.1,
        }
    }

    #[test]
    fn a_canary_is_judged_only_after_enough_uploads() {
        assert_eq!(judge(counts((4, 4), (0, 100)), POLICY), None);
        let reason = judge(counts((5, 5), (0, 100)), POLICY).unwrap();
        assert!(reason.contains("5/5 uploads (100 %)"), "{reason}");
        assert!(reason.contains("0/100 (0 %)"), "{reason}");
    }

    #[test]
    fn a_canary_is_compared_with_the_stable_version_not_with_zero() {
        // The stable version fails as often: the canary is not to blame.
        assert_eq!(judge(counts((2, 10), (20, 100)), POLICY), None);
        assert_eq!(judge(counts((2, 10), (10, 100)), POLICY), None);
        assert!(judge(counts((3, 10), (10, 100)), POLICY).is_some());
        // Without stable uploads the baseline is no failure at all.
        assert!(judge(counts((2, 10), (0, 0)), POLICY).is_some());
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        let org = OrgId::from("540155");
        assert_eq!(bucket(&org), bucket(&OrgId::from("540155")));
        let buckets: std::collections::HashSet<u8> = (0..1000)
            .map(|n| bucket(&OrgId::from(format!("org-{n}"))))
            .collect();
        assert!(buckets.len() > 90, "{} buckets used", buckets.len());
        assert!(buckets.iter().all(|bucket| *bucket < 100));
    }

    #[test]
    fn an_audience_takes_its_share_and_its_list() {
        let orgs: Vec<OrgId> = (0..400).map(|n| OrgId::from(format!("org-{n}"))).collect();
        let share = CanaryAudience {
            share_percent: 25,
            org_ids: vec![],
        };
        let taken = orgs.iter().filter(|org| share.takes(org)).count();
        assert!((60..140).contains(&taken), "{taken} of 400 at 25 %");
        let listed = CanaryAudience {
            share_percent: 0,
            org_ids: vec![OrgId::from("org-7")],
        };
        assert!(listed.takes(&OrgId::from("org-7")));
        assert_eq!(orgs.iter().filter(|org| listed.takes(org)).count(), 1);
        let none = CanaryAudience {
            share_percent: 0,
            org_ids: vec![],
        };
        assert!(!orgs.iter().any(|org| none.takes(org)));
        let all = CanaryAudience {
            share_percent: 100,
            org_ids: vec![],
        };
        assert!(orgs.iter().all(|org| all.takes(org)));
    }
}
