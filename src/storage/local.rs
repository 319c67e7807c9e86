//! Objects as files under a root directory: the default store, so a first run needs no S3
//! server. A put writes a temporary file, syncs it and renames it into place, so an object is
//! either absent or complete.

use std::io::SeekFrom;
use std::path::{Component, Path, PathBuf};

use tokio::fs;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{ByteRange, ObjectRead, PutError, StoreError};

/// A directory of objects.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`, created if missing.
    pub async fn new(root: PathBuf) -> Result<Self, StoreError> {
        fs::create_dir_all(&root).await.map_err(|error| {
            StoreError::Other(format!("cannot create {}: {error}", root.display()))
        })?;
        Ok(Self { root })
    }

    /// The file of `key`; keys with absolute or `..` components are refused.
    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let relative = Path::new(key);
        if key.is_empty()
            || relative
                .components()
                .any(|component| !matches!(component, Component::Normal(_)))
        {
            return Err(StoreError::Other(format!("invalid object key '{key}'")));
        }
        Ok(self.root.join(relative))
    }

    pub(super) async fn put(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<u64, PutError> {
        let path = self.path(key)?;
        let directory = path.parent().expect("a key has a parent").to_path_buf();
        fs::create_dir_all(&directory).await.map_err(io_error)?;
        let temporary = directory.join(format!(".partial-{}", uuid::Uuid::new_v4().simple()));
        let result = async {
            let mut file = fs::File::create(&temporary).await.map_err(io_error)?;
            let mut buffer = vec![0u8; 256 * 1024];
            let mut written = 0u64;
            loop {
                let read = body.read(&mut buffer).await.map_err(PutError::Body)?;
                if read == 0 {
                    break;
                }
                file.write_all(&buffer[..read]).await.map_err(io_error)?;
                written += read as u64;
            }
            file.sync_all().await.map_err(io_error)?;
            fs::rename(&temporary, &path).await.map_err(io_error)?;
            // The rename is durable only once the directory is synced.
            fs::File::open(&directory)
                .await
                .map_err(io_error)?
                .sync_all()
                .await
                .map_err(io_error)?;
            Ok::<_, PutError>(written)
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&temporary).await;
        }
        result
    }

    pub(super) async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ObjectRead, StoreError> {
        let path = self.path(key)?;
        let mut file = fs::File::open(&path)
            .await
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::NotFound => StoreError::NotFound(key.to_owned()),
                _ => StoreError::Other(error.to_string()),
            })?;
        let size = file
            .metadata()
            .await
            .map_err(|error| StoreError::Other(error.to_string()))?
            .len();
        let Some(range) = range else {
            return Ok(ObjectRead {
                body: Box::pin(file),
                length: size,
            });
        };
        if range.start >= size {
            return Err(StoreError::Other(format!(
                "range starts beyond the end of '{key}'"
            )));
        }
        let end = range.end.min(size - 1);
        file.seek(SeekFrom::Start(range.start))
            .await
            .map_err(|error| StoreError::Other(error.to_string()))?;
        let length = end - range.start + 1;
        Ok(ObjectRead {
            body: Box::pin(file.take(length)),
            length,
        })
    }

    pub(super) async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match fs::metadata(self.path(key)?).await {
            Ok(metadata) => Ok(Some(metadata.len())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(StoreError::Other(error.to_string())),
        }
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        // Walk only below the prefix's directory, not the whole store.
        let start = match prefix.rfind('/') {
            Some(end) => self.path(&prefix[..end])?,
            None => self.root.clone(),
        };
        let mut pending = vec![start];
        while let Some(directory) = pending.pop() {
            let mut entries = match fs::read_dir(&directory).await {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(StoreError::Other(error.to_string())),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|error| StoreError::Other(error.to_string()))?
            {
                let path = entry.path();
                let file_type = entry
                    .file_type()
                    .await
                    .map_err(|error| StoreError::Other(error.to_string()))?;
                if file_type.is_dir() {
                    pending.push(path);
                } else if let Ok(relative) = path.strip_prefix(&self.root) {
                    let key = relative.to_string_lossy().into_owned();
                    let is_partial = relative
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with(".partial-"));
                    if key.starts_with(prefix) && !is_partial {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    pub(super) async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let keys = self.list(prefix).await?;
        let directory = self.path(prefix.trim_end_matches('/'))?;
        match fs::remove_dir_all(&directory).await {
            Ok(()) => Ok(keys.len() as u64),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(error) => Err(StoreError::Other(error.to_string())),
        }
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(StoreError::Other(error.to_string())),
        }
    }
}

fn io_error(error: std::io::Error) -> PutError {
    PutError::Store(StoreError::Other(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_range_list_delete() {
        let root =
            std::env::temp_dir().join(format!("exsvc-local-{}", uuid::Uuid::new_v4().simple()));
        let store = LocalStore::new(root.clone()).await.unwrap();
        let mut body: &[u8] = b"hello, world";
        assert_eq!(store.put("o/e/s.csv", &mut body).await.unwrap(), 12);
        let mut read = store
            .get("o/e/s.csv", Some(ByteRange { start: 7, end: 100 }))
            .await
            .unwrap();
        let mut text = String::new();
        read.body.read_to_string(&mut text).await.unwrap();
        assert_eq!((text.as_str(), read.length), ("world", 5));
        assert_eq!(store.size("o/e/s.csv").await.unwrap(), Some(12));
        assert_eq!(store.list("o/e/").await.unwrap(), ["o/e/s.csv"]);
        assert!(matches!(
            store.get("o/e/none", None).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(store.get("../escape", None).await.is_err());
        assert_eq!(store.delete_prefix("o/e/").await.unwrap(), 1);
        assert_eq!(store.size("o/e/s.csv").await.unwrap(), None);
        let _ = std::fs::remove_dir_all(root);
    }
}
