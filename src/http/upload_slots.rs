//! The upload slots of one replica: a total (each upload holds up to two parts in memory) and a
//! share per application, so one application's uploads cannot take every slot and starve the
//! others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::IntGaugeVec;

/// Why an upload could not take a slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotRefusal {
    /// Every slot of the replica is taken.
    #[error(
        "too many uploads in progress on this replica (MAX_CONCURRENT_UPLOADS = {limit}); retry shortly"
    )]
    Replica {
        /// `MAX_CONCURRENT_UPLOADS`.
        limit: usize,
    },
    /// The application holds its whole share.
    #[error(
        "application '{application}' already has {limit} uploads in progress on this replica (MAX_UPLOADS_PER_APPLICATION = {limit}); retry shortly"
    )]
    Application {
        /// The application.
        application: String,
        /// `MAX_UPLOADS_PER_APPLICATION`.
        limit: usize,
    },
}

impl SlotRefusal {
    /// The `limit` label of the refusal counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Replica { .. } => "upload_slots",
            Self::Application { .. } => "application_upload_slots",
        }
    }
}

/// The slots, shared by every upload handler of the replica.
#[derive(Debug)]
pub struct UploadSlots {
    total_limit: usize,
    per_application_limit: usize,
    taken: Mutex<Taken>,
    /// `upload_slots_in_use{application}`; a series is removed when its application holds no
    /// slot, so only applications that upload right now have one.
    gauge: IntGaugeVec,
}

#[derive(Debug, Default)]
struct Taken {
    total: usize,
    by_application: HashMap<String, usize>,
}

impl UploadSlots {
    /// `total_limit` slots, at most `per_application_limit` of them for one application.
    pub fn new(total_limit: usize, per_application_limit: usize, gauge: IntGaugeVec) -> Self {
        Self {
            total_limit,
            per_application_limit,
            taken: Mutex::new(Taken::default()),
            gauge,
        }
    }

    /// Takes a slot for `application`, or says which limit is reached. The slot is given back
    /// when the returned guard is dropped.
    pub fn try_take(self: &Arc<Self>, application: &str) -> Result<UploadSlot, SlotRefusal> {
        let mut taken = self
            .taken
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let held = taken.by_application.get(application).copied().unwrap_or(0);
        // The application's own share first: an application at its share is told so, even
        // when the replica happens to be full too.
        if held >= self.per_application_limit {
            return Err(SlotRefusal::Application {
                application: application.to_owned(),
                limit: self.per_application_limit,
            });
        }
        if taken.total >= self.total_limit {
            return Err(SlotRefusal::Replica {
                limit: self.total_limit,
            });
        }
        taken.total += 1;
        taken
            .by_application
            .insert(application.to_owned(), held + 1);
        self.gauge
            .with_label_values(&[application])
            .set(gauge_value(held + 1));
        Ok(UploadSlot {
            slots: self.clone(),
            application: application.to_owned(),
        })
    }

    /// Takes `count` of the replica's slots for `holder`, work that holds as much memory as
    /// that many uploads (an admin push), outside any application's share; all or none.
    pub fn try_take_many(
        self: &Arc<Self>,
        holder: &str,
        count: usize,
    ) -> Result<Vec<UploadSlot>, SlotRefusal> {
        let mut taken = self
            .taken
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if taken.total + count > self.total_limit {
            return Err(SlotRefusal::Replica {
                limit: self.total_limit,
            });
        }
        let held = taken.by_application.get(holder).copied().unwrap_or(0) + count;
        taken.total += count;
        taken.by_application.insert(holder.to_owned(), held);
        self.gauge
            .with_label_values(&[holder])
            .set(gauge_value(held));
        Ok((0..count)
            .map(|_| UploadSlot {
                slots: self.clone(),
                application: holder.to_owned(),
            })
            .collect())
    }

    fn give_back(&self, application: &str) {
        let mut taken = self
            .taken
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        taken.total = taken.total.saturating_sub(1);
        let held = taken
            .by_application
            .get(application)
            .copied()
            .unwrap_or(1)
            .saturating_sub(1);
        if held == 0 {
            taken.by_application.remove(application);
            let _ = self.gauge.remove_label_values(&[application]);
        } else {
            taken.by_application.insert(application.to_owned(), held);
            self.gauge
                .with_label_values(&[application])
                .set(gauge_value(held));
        }
    }
}

fn gauge_value(slots: usize) -> i64 {
    i64::try_from(slots).unwrap_or(i64::MAX)
}

/// One taken slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct UploadSlot {
    slots: Arc<UploadSlots>,
    application: String,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.slots.give_back(&self.application);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn slots(total: usize, per_application: usize) -> (Arc<UploadSlots>, IntGaugeVec) {
        let gauge = IntGaugeVec::new(Opts::new("slots", "slots"), &["application"]).unwrap();
        (
            Arc::new(UploadSlots::new(total, per_application, gauge.clone())),
            gauge,
        )
    }

    fn series(gauge: &IntGaugeVec) -> Vec<(String, i64)> {
        use prometheus::core::Collector as _;
        let families = gauge.collect();
        let mut series: Vec<(String, i64)> = families
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|metric| {
                (
                    metric.get_label()[0].value().to_owned(),
                    metric.get_gauge().get_value() as i64,
                )
            })
            .collect();
        series.sort();
        series
    }

    #[test]
    fn an_application_cannot_take_more_than_its_share() {
        let (slots, gauge) = slots(4, 2);
        let first = slots.try_take("a").unwrap();
        let _second = slots.try_take("a").unwrap();
        let refusal = slots.try_take("a").unwrap_err();
        assert_eq!(
            refusal,
            SlotRefusal::Application {
                application: "a".into(),
                limit: 2
            }
        );
        assert_eq!(refusal.metric_label(), "application_upload_slots");
        assert!(refusal.to_string().contains("MAX_UPLOADS_PER_APPLICATION"));
        // Another application still gets in.
        let _other = slots.try_take("b").unwrap();
        assert_eq!(series(&gauge), [("a".into(), 2), ("b".into(), 1)]);
        drop(first);
        let _again = slots.try_take("a").unwrap();
    }

    #[test]
    fn the_total_bounds_every_application_together() {
        let (slots, gauge) = slots(3, 2);
        let _a = [slots.try_take("a").unwrap(), slots.try_take("a").unwrap()];
        let b = slots.try_take("b").unwrap();
        let refusal = slots.try_take("c").unwrap_err();
        assert_eq!(refusal, SlotRefusal::Replica { limit: 3 });
        assert_eq!(refusal.metric_label(), "upload_slots");
        assert!(refusal.to_string().contains("MAX_CONCURRENT_UPLOADS"));
        drop(b);
        // The freed slot is usable, and an application that holds none has no series.
        assert_eq!(series(&gauge), [("a".into(), 2)]);
        let _c = slots.try_take("c").unwrap();
        assert_eq!(series(&gauge), [("a".into(), 2), ("c".into(), 1)]);
    }
}
