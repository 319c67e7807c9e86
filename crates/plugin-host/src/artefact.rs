//! Compiled components as bytes ("artefacts"): a component is compiled once per engine
//! configuration and loaded elsewhere (another replica, a restart, the author's tool) by
//! mapping its machine code instead of generating it again.
//!
//! An artefact runs as native code without the checks compilation makes, so it is only ever
//! loaded from a place the fleet alone writes: an [`ArtefactDir`] on local disk (created
//! private to the user), or the object store with the artefact's SHA-256 recorded in the
//! database when it was made, which the service checks before loading. An artefact of another
//! engine configuration (see [`fingerprint`]) is refused by wasmtime's own header check; the
//! caller then compiles again.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::failure::PluginFailure;

/// The engine's fingerprint: a short hex digest of everything that makes compiled code of one
/// engine unusable by another (wasmtime's version, the target, compiler settings, features such
/// as fuel metering). Artefacts are kept by (component digest, fingerprint).
pub(crate) fn fingerprint(engine: &Engine) -> String {
    /// `Hash` into SHA-256, which, unlike `DefaultHasher`, is the same in every build.
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            0
        }
    }
    let mut hasher = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..12])
}

/// The compiled component in `artefact`, which must be the output of
/// [`LoadedPlugin::artefact`](crate::LoadedPlugin::artefact) from a host with the same
/// fingerprint, read from a trusted place (see the module's documentation).
pub(crate) fn deserialize(engine: &Engine, artefact: &[u8]) -> Result<Component, PluginFailure> {
    #[expect(
        unsafe_code,
        reason = "wasmtime trusts a precompiled artefact to be its own output; callers load \
                  artefacts only from places the fleet alone writes, checked by digest"
    )]
    // SAFETY: see the reason above; a truncated artefact or one of another engine fails
    // wasmtime's header and compatibility checks and is reported, not run.
    let component = unsafe { Component::deserialize(engine, artefact) };
    component.map_err(|error| PluginFailure::Invalid(format!("unusable artefact: {error:#}")))
}

/// Whether `text` is a plain lowercase hex name (digests and fingerprints become file names).
fn plain_hex(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Artefacts on local disk, `<root>/<fingerprint>/<digest>.cwasm`: what a restarted replica or
/// the author's tool loads instead of compiling.
#[derive(Debug, Clone)]
pub struct ArtefactDir {
    root: PathBuf,
}

impl ArtefactDir {
    /// The directory `root`, created (private to this user) if missing.
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self { root })
    }

    /// The author's tool's directory: `$EXPORT_SERVICE_CACHE_DIR`, else `export-service/` under
    /// `$XDG_CACHE_HOME` or `~/.cache`; `None` when none is known or it cannot be created.
    pub fn for_tool() -> Option<Self> {
        let root = std::env::var_os("EXPORT_SERVICE_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache"))
                    })
                    .map(|cache| cache.join("export-service"))
            })?;
        Self::new(root.join("artefacts")).ok()
    }

    /// Where the artefact of `digest` for engines of `fingerprint` lives, when both are plain
    /// hex.
    pub fn path(&self, digest: &str, fingerprint: &str) -> Option<PathBuf> {
        (plain_hex(digest) && plain_hex(fingerprint))
            .then(|| self.root.join(fingerprint).join(format!("{digest}.cwasm")))
    }

    /// The artefact's bytes, if this directory holds them.
    pub fn read(&self, digest: &str, fingerprint: &str) -> Option<Vec<u8>> {
        let path = self.path(digest, fingerprint)?;
        match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read a cached artefact");
                None
            }
        }
    }

    /// Keeps an artefact; written to a temporary file and renamed, so a reader never sees part
    /// of one.
    pub fn write(&self, digest: &str, fingerprint: &str, artefact: &[u8]) -> std::io::Result<()> {
        let path = self.path(digest, fingerprint).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "digest or fingerprint not hex",
            )
        })?;
        let directory = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(directory)?;
        // Unique per writer (process and call), so two writers never share a temporary file.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temporary = directory.join(format!(".{digest}.{}.{write}.tmp", std::process::id()));
        let written = std::fs::File::create(&temporary)
            .and_then(|mut file| file.write_all(artefact).and_then(|()| file.sync_all()))
            .and_then(|()| std::fs::rename(&temporary, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }

    /// Removes the artefact, if held (a corrupt one, say).
    pub fn remove(&self, digest: &str, fingerprint: &str) {
        if let Some(path) = self.path(digest, fingerprint) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_plain_hex_have_no_path() {
        let dir = ArtefactDir {
            root: PathBuf::from("/nonexistent"),
        };
        assert!(dir.path("../../etc/passwd", "ab").is_none());
        assert!(dir.path("ab", "").is_none());
        assert!(dir.path("AB", "cd").is_none());
        assert_eq!(
            dir.path("ab12", "cd34"),
            Some(PathBuf::from("/nonexistent/cd34/ab12.cwasm"))
        );
    }

    #[test]
    fn a_written_artefact_reads_back_and_a_missing_one_is_none() {
        let root = std::env::temp_dir().join(format!("artefact-dir-test-{}", std::process::id()));
        let dir = ArtefactDir::new(&root).expect("directory");
        assert_eq!(dir.read("aa", "bb"), None);
        dir.write("aa", "bb", b"compiled").expect("written");
        assert_eq!(dir.read("aa", "bb").as_deref(), Some(&b"compiled"[..]));
        dir.remove("aa", "bb");
        assert_eq!(dir.read("aa", "bb"), None);
        std::fs::remove_dir_all(root).expect("cleaned up");
    }

    #[test]
    fn the_fingerprint_is_stable_and_differs_with_the_engine_configuration() {
        let plain = Engine::default();
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let metering = Engine::new(&config).expect("engine");
        assert_eq!(fingerprint(&plain), fingerprint(&Engine::default()));
        assert_ne!(fingerprint(&plain), fingerprint(&metering));
        assert_eq!(fingerprint(&plain).len(), 24);
    }
}
