//! The most memory one replica can hold under its settings: the sum of every buffer the settings
//! bound, with all upload slots busy at once and every upload bound to a plugin. Operators size
//! the container's memory limit from it (docs/OPERATIONS.md, "Sizing"), and CI checks the
//! manifests in `deploy/` against it, so raising a default that does not fit fails there.
//!
//! Each term mirrors the code that holds the memory; change it when that code changes.

use super::{Config, MAX_REQUEST_HEAD_BYTES};
use crate::domain::plugin_limits::{LimitCeilings, slots_for};

const MIB: u64 = 1024 * 1024;

/// Resident memory of an idle replica (binary, runtime, connection pools, Kafka client), rounded
/// up.
const BASE_BYTES: u64 = 50 * MIB;

/// Buffers of one upload besides its parts: the request body's chunks, the conversion scratch,
/// the plugin stage's input chunks (`CHUNK_BYTES`, a channel of two), a plugin instance's tables
/// and stack.
const UPLOAD_OVERHEAD_BYTES: u64 = 2 * MIB;

/// Copies of one call's plugin output that can be alive at once (`ingest/plugin_stage.rs`): the
/// output returned into the host, the copy being sent, two queued in the channel and one being
/// read into a part.
const PLUGIN_OUTPUT_COPIES: u64 = 5;

/// Room for a self-test sample in a JSON push, besides the component.
pub const PUSH_SAMPLE_BYTES: u64 = 16 * MIB;

/// Buffers of one archive job besides its parts: the DEFLATE state, the 128 KiB read and output
/// buffers, the 1 MiB chunk being filled, four queued towards the store and one being read.
const PACKAGING_OVERHEAD_BYTES: u64 = 8 * MIB;

/// One term of the sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryTerm {
    /// What holds the memory.
    pub what: &'static str,
    /// How the term is computed, in the settings' names.
    pub formula: String,
    /// The bytes it comes to.
    pub bytes: u64,
}

/// The worst case of one replica, term by term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBudget {
    /// The terms, in the order docs/OPERATIONS.md lists them.
    pub terms: Vec<MemoryTerm>,
}

/// What one upload slot may hold at most under `config`: its two parts, its buffers, a plugin
/// session and that session's output in flight.
pub fn slot_bytes(config: &Config) -> u64 {
    let limits = &config.data_path.plugin_limits;
    2 * config.layout.part_size as u64
        + UPLOAD_OVERHEAD_BYTES
        + limits.memory_bytes as u64
        + PLUGIN_OUTPUT_COPIES * limits.output_bytes_per_call as u64
}

/// The most a binding may give one plugin session on this replica (`"limits"` in its
/// configuration): memory up to what all the other upload slots would hold (such an upload then
/// holds that many slots, so the worst case below still holds), a call up to the session's time.
pub fn plugin_ceilings(config: &Config) -> LimitCeilings {
    let limits = &config.data_path.plugin_limits;
    let others = config.data_path.max_concurrent_uploads.saturating_sub(1) as u64;
    LimitCeilings {
        memory_bytes: limits.memory_bytes as u64 + others * slot_bytes(config),
        call_timeout: limits.session_timeout,
    }
}

/// The upload slots an upload holds when its binding gives its plugin session
/// `memory_bytes` (one, plus one per slot's worth of memory above the default).
pub fn upload_slots_for(config: &Config, memory_bytes: u64) -> usize {
    slots_for(
        memory_bytes,
        config.data_path.plugin_limits.memory_bytes as u64,
        slot_bytes(config),
    )
}

/// What an admin push may hold at most: its body (base64 in JSON is 4/3 of the component, plus
/// room for a self-test sample), the decoded component, and the compiler's working memory
/// (taken as twice the component).
pub fn push_bytes(config: &Config) -> u64 {
    let component = config.registry.max_component_bytes as u64;
    component / 3 * 4 + PUSH_SAMPLE_BYTES + component + 2 * component
}

/// The upload slots an admin push takes while it reads and compiles its component, so that
/// the worst case above holds during a push too (at most every slot of the replica).
pub fn push_slots(config: &Config) -> usize {
    let slots = push_bytes(config).div_ceil(slot_bytes(config).max(1));
    usize::try_from(slots)
        .unwrap_or(usize::MAX)
        .clamp(1, config.data_path.max_concurrent_uploads)
}

impl MemoryBudget {
    /// The worst case under `config`.
    pub fn worst_case(config: &Config) -> Self {
        let data_path = &config.data_path;
        let plugin_cache_bytes = data_path.plugin_limits.cache_bytes as u64;
        let connections = config.listener_limits.max_connections as u64;
        let head = MAX_REQUEST_HEAD_BYTES as u64;
        let slots = data_path.max_concurrent_uploads as u64;
        let part = config.layout.part_size as u64;
        let plugin_memory = data_path.plugin_limits.memory_bytes as u64;
        let plugin_output = data_path.plugin_limits.output_bytes_per_call as u64;
        let mib = |bytes: u64| bytes / MIB;
        let mut terms = vec![
            MemoryTerm {
                what: "base (idle replica)",
                formula: format!("{} MiB", mib(BASE_BYTES)),
                bytes: BASE_BYTES,
            },
            MemoryTerm {
                what: "upload parts (one being sent, one being read)",
                formula: format!(
                    "MAX_CONCURRENT_UPLOADS {slots} × 2 × AWS_UPLOADER_BUFFER_SIZE {} MiB",
                    mib(part)
                ),
                bytes: slots * 2 * part,
            },
            MemoryTerm {
                what: "upload buffers besides parts",
                formula: format!(
                    "MAX_CONCURRENT_UPLOADS {slots} × {} MiB",
                    mib(UPLOAD_OVERHEAD_BYTES)
                ),
                bytes: slots * UPLOAD_OVERHEAD_BYTES,
            },
            MemoryTerm {
                what: "plugin linear memory (one session per plugin-bound upload)",
                formula: format!(
                    "MAX_CONCURRENT_UPLOADS {slots} × PLUGIN_MEMORY_LIMIT {} MiB",
                    mib(plugin_memory)
                ),
                bytes: slots * plugin_memory,
            },
            MemoryTerm {
                what: "plugin output in flight",
                formula: format!(
                    "MAX_CONCURRENT_UPLOADS {slots} × {PLUGIN_OUTPUT_COPIES} × PLUGIN_OUTPUT_LIMIT {} MiB",
                    mib(plugin_output)
                ),
                bytes: slots * PLUGIN_OUTPUT_COPIES * plugin_output,
            },
            MemoryTerm {
                what: "compiled-plugin cache",
                formula: format!("PLUGIN_CACHE_SIZE {} MiB", mib(plugin_cache_bytes)),
                bytes: plugin_cache_bytes,
            },
            MemoryTerm {
                what: "request heads (every connection of the three listeners)",
                formula: format!("3 × MAX_CONNECTIONS {connections} × {} KiB", head / 1024),
                bytes: 3 * connections * head,
            },
        ];
        if data_path.packaging_worker {
            terms.push(MemoryTerm {
                what: "packaging (one archive job)",
                formula: format!(
                    "2 × AWS_UPLOADER_BUFFER_SIZE {} MiB + {} MiB",
                    mib(part),
                    mib(PACKAGING_OVERHEAD_BYTES)
                ),
                bytes: 2 * part + PACKAGING_OVERHEAD_BYTES,
            });
        }
        Self { terms }
    }

    /// The sum of the terms, in bytes.
    pub fn total(&self) -> u64 {
        self.terms.iter().map(|term| term.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let settings = Settings::from_pairs(
            pairs
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        );
        Config::from_settings(&settings).unwrap()
    }

    fn total(pairs: &[(&str, &str)]) -> u64 {
        MemoryBudget::worst_case(&config(pairs)).total()
    }

    #[test]
    fn every_setting_of_the_sum_moves_it_by_its_multiple() {
        let defaults = config(&[]);
        let uploads = defaults.data_path.max_concurrent_uploads as u64;
        let part = defaults.layout.part_size as u64;
        let limits = &defaults.data_path.plugin_limits;
        let base = total(&[]);
        // One more upload slot adds two parts, its buffers, a plugin session and its output.
        let slots = (uploads + 1).to_string();
        assert_eq!(
            total(&[("MAX_CONCURRENT_UPLOADS", &slots)]) - base,
            2 * part
                + UPLOAD_OVERHEAD_BYTES
                + limits.memory_bytes as u64
                + PLUGIN_OUTPUT_COPIES * limits.output_bytes_per_call as u64
        );
        // A part one MiB larger costs two MiB per upload and two for the archive job.
        let larger_part = (part + MIB).to_string();
        assert_eq!(
            total(&[("AWS_UPLOADER_BUFFER_SIZE", &larger_part)]) - base,
            (uploads + 1) * 2 * MIB
        );
        let more_memory = (limits.memory_bytes as u64 / MIB + 1).to_string();
        assert_eq!(
            total(&[("PLUGIN_MEMORY_LIMIT", &more_memory)]) - base,
            uploads * MIB
        );
        let more_output = (limits.output_bytes_per_call as u64 / MIB + 1).to_string();
        assert_eq!(
            total(&[("PLUGIN_OUTPUT_LIMIT", &more_output)]) - base,
            uploads * PLUGIN_OUTPUT_COPIES * MIB
        );
        let cache = (limits.cache_bytes as u64 / MIB + 1).to_string();
        assert_eq!(total(&[("PLUGIN_CACHE_SIZE", &cache)]) - base, MIB);
        let connections = (defaults.listener_limits.max_connections + 1).to_string();
        assert_eq!(
            total(&[("MAX_CONNECTIONS", &connections)]) - base,
            3 * MAX_REQUEST_HEAD_BYTES as u64
        );
        // A push borrows enough upload slots to cover what it holds.
        let push = push_slots(&defaults) as u64;
        assert!(push * slot_bytes(&defaults) >= push_bytes(&defaults));
        assert!(push_slots(&defaults) <= defaults.data_path.max_concurrent_uploads);
        // A replica that does not package holds no archive job.
        assert_eq!(
            base - total(&[("PACKAGING_WORKER", "false")]),
            2 * part + PACKAGING_OVERHEAD_BYTES
        );
    }
}
