//! The next request id of one client key, kept in a small file beside the key file, so
//! that a client never signs a new operation under an id it used before
//! (decision 0062).
//!
//! A validator's account answer is no floor on its own: f+1 validators that lag agree on
//! an old next id, and a client that trusted it would reuse an executed id. With replies
//! bound to the request digest such a reuse is refused, never taken for the other
//! operation's receipt, but the operation does not run either. So the client keeps the
//! id itself: [`NextIdFile::reserve`] takes the next id (at least any floor the caller
//! knows, such as an account answer) and writes the one after it *before* the request
//! is sent, so a crash after sending never leads to the id being signed again.
//!
//! The file holds one decimal number and a newline. It is replaced atomically: written
//! to a temporary file in the same directory, synced, renamed over the old one, and the
//! directory synced; a crash leaves the old number or the new one, never a mix. One
//! process per key at a time: two that reserve at once may take the same id, and then
//! the second operation to reach the validators is refused as a reused id (it does not
//! run, and is never reported as applied). (A lock would need `File::lock`, newer than
//! the workspace's minimum Rust version.)

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Longest content the file may have: a u64 in decimal and a newline.
const MAX_FILE_BYTES: u64 = 32;

/// Why the next request id could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum NextIdError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The file holds something other than a request id; it is left as it is.
    #[error("{}: not a request id ({text:?}); fix or remove the file", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What it holds (cut to its first bytes).
        text: String,
    },
    /// The ids are used up.
    #[error("{}: request ids are used up", path.display())]
    Exhausted {
        /// The file.
        path: PathBuf,
    },
}

/// The file that keeps one client key's next request id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextIdFile {
    path: PathBuf,
}

impl NextIdFile {
    /// The id file of the key file `key_file`: the same path with `.next-id` appended
    /// (`client-0.key` keeps its ids in `client-0.key.next-id`).
    pub fn beside(key_file: &Path) -> NextIdFile {
        let mut name = key_file.as_os_str().to_owned();
        name.push(".next-id");
        NextIdFile {
            path: PathBuf::from(name),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next request id the file records; `None` if there is no file yet.
    pub fn load(&self) -> Result<Option<u64>, NextIdError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let meta = file.metadata().map_err(|e| self.io(e))?;
        if !meta.is_file() {
            return Err(self.io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| self.io(e))?;
        match text.strip_suffix('\n').unwrap_or(&text).parse::<u64>() {
            Ok(id) if id >= 1 && text.len() as u64 <= MAX_FILE_BYTES => Ok(Some(id)),
            _ => Err(NextIdError::Corrupt {
                path: self.path.clone(),
                text: text.chars().take(MAX_FILE_BYTES as usize).collect(),
            }),
        }
    }

    /// Takes the next request id: the largest of the file's, `floor` and 1. Before it
    /// returns, the file records the id after it (atomically and durably), so the id
    /// returned is never handed out again, whatever happens next.
    pub fn reserve(&self, floor: u64) -> Result<u64, NextIdError> {
        let id = self.load()?.unwrap_or(1).max(floor).max(1);
        let next = id.checked_add(1).ok_or_else(|| NextIdError::Exhausted {
            path: self.path.clone(),
        })?;
        self.store(next)?;
        Ok(id)
    }

    /// Replaces the file with one recording `next`: temporary file, sync, rename, and
    /// a sync of the directory.
    fn store(&self, next: u64) -> Result<(), NextIdError> {
        let tmp = self.sibling(".tmp");
        let write = || -> io::Result<()> {
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(&tmp)?;
            f.write_all(format!("{next}\n").as_bytes())?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &self.path)?;
            #[cfg(unix)]
            {
                let dir = match self.path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io(e)
        })
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    }

    fn io(&self, source: io::Error) -> NextIdError {
        NextIdError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("pbft-next-id-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).expect("a temporary directory");
            Dir(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn ids_are_handed_out_once_and_never_go_back() {
        let d = Dir::new("once");
        let f = NextIdFile::beside(&d.0.join("client-0.key"));
        assert_eq!(f.path(), d.0.join("client-0.key.next-id"));
        assert_eq!(f.load().expect("no file yet"), None);
        assert_eq!(f.reserve(0).expect("reserve"), 1);
        assert_eq!(f.reserve(0).expect("reserve"), 2);
        // a floor above the file moves it on
        assert_eq!(f.reserve(10).expect("reserve"), 10);
        // a lower floor (a stale account answer) never moves it back
        assert_eq!(f.reserve(3).expect("reserve"), 11);
        assert_eq!(f.load().expect("load"), Some(12));
        assert_eq!(
            fs::read_to_string(f.path()).expect("read"),
            "12\n",
            "one number and a newline"
        );
        // nothing temporary is left behind
        let mut names: Vec<String> = fs::read_dir(&d.0)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["client-0.key.next-id"]);
    }

    #[test]
    fn a_file_that_is_not_a_request_id_is_refused_and_left_alone() {
        let d = Dir::new("corrupt");
        let f = NextIdFile::beside(&d.0.join("k.key"));
        for text in [
            "",
            "0\n",
            "seven\n",
            "12 13\n",
            "-4\n",
            "99999999999999999999999\n",
        ] {
            fs::write(f.path(), text).expect("write");
            let e = f.reserve(1).expect_err(text);
            assert!(matches!(e, NextIdError::Corrupt { .. }), "{text:?}: {e}");
            assert_eq!(fs::read_to_string(f.path()).expect("read"), text);
        }
        // a directory in its place is no file
        fs::remove_file(f.path()).expect("remove");
        fs::create_dir(f.path()).expect("mkdir");
        assert!(matches!(f.load(), Err(NextIdError::Io { .. })));
        // the last id is never handed out twice
        fs::remove_dir(f.path()).expect("rmdir");
        fs::write(f.path(), format!("{}\n", u64::MAX)).expect("write");
        assert!(matches!(f.reserve(1), Err(NextIdError::Exhausted { .. })));
    }
}
