//! Where an export stands once its sources answer (contract §8): nothing happens while any
//! source is pending; when all are terminal the export is packaged (complete or partial) or,
//! if every source failed, it fails without an archive.

use super::{ExportStatus, SourceStatus};

/// The collective state of an export's sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Some source has not answered.
    Waiting,
    /// Every source failed: the export fails, no archive.
    AllFailed,
    /// Every source answered and at least one delivered: package them.
    ReadyToPackage,
}

/// The progress of an export whose sources have these statuses.
pub fn progress(statuses: impl IntoIterator<Item = SourceStatus>) -> Progress {
    let mut any = false;
    let mut any_complete = false;
    for status in statuses {
        any = true;
        match status {
            SourceStatus::Pending => return Progress::Waiting,
            SourceStatus::Complete => any_complete = true,
            SourceStatus::Failed => {}
        }
    }
    match (any, any_complete) {
        (false, _) => Progress::Waiting,
        (true, true) => Progress::ReadyToPackage,
        (true, false) => Progress::AllFailed,
    }
}

/// The final status of a packaged export.
pub fn packaged_status(statuses: impl IntoIterator<Item = SourceStatus>) -> ExportStatus {
    if statuses
        .into_iter()
        .any(|status| status == SourceStatus::Failed)
    {
        ExportStatus::Partial
    } else {
        ExportStatus::Complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SourceStatus::{Complete, Failed, Pending};

    #[test]
    fn progress_of_sources() {
        assert_eq!(progress([Complete, Pending]), Progress::Waiting);
        assert_eq!(progress([Failed, Failed]), Progress::AllFailed);
        assert_eq!(progress([Complete, Failed]), Progress::ReadyToPackage);
        assert_eq!(progress([Complete]), Progress::ReadyToPackage);
        assert_eq!(progress([]), Progress::Waiting);
        assert_eq!(packaged_status([Complete, Failed]), ExportStatus::Partial);
        assert_eq!(
            packaged_status([Complete, Complete]),
            ExportStatus::Complete
        );
    }
}
