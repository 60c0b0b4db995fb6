//! Reading and writing secret key files.
//!
//! Format (text, our own):
//!
//! ```text
//! # pbft ed25519 secret key. Keep this file private (mode 0600).
//! public = "<64 hex>"
//! secret = "<64 hex seed>"
//! ```
//!
//! Blank lines and lines starting with `#` are ignored. Both keys must appear
//! exactly once; anything else is [`KeyFileError::Malformed`] with the 1-based
//! line number (0 when a key is missing). On unix a key file is refused when
//! it is not a regular file (checked on the opened file, which is opened
//! without blocking, so a FIFO cannot hang the reader), when it is readable or
//! writable by group or others, when it is owned by another user than the
//! process's, or when its directory lets another user replace it (writable by
//! group or others without the sticky bit, or owned by another user than the
//! process's or root). Files are written atomically: a
//! temporary file created with mode 0600 in the same directory is written,
//! synced and renamed into place, and the directory is synced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{decode_hex_array, CryptoError};
use crate::keys::{Keypair, PublicKey};

/// Largest key file we are willing to read; real ones are ~200 bytes.
const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

/// The first line of every key file we write.
const HEADER: &str = "# pbft ed25519 secret key. Keep this file private (mode 0600).";

/// Why a key file could not be read or written. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The key file does not exist.
    #[error("key file {} not found", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// Writing without `overwrite` to a path that already exists.
    #[error("key file {} already exists; refusing to overwrite it", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// An I/O error while reading or writing the file (or syncing its directory).
    #[error("I/O error on key file {}: {source}", path.display())]
    Io {
        /// The file (or its directory, for a directory sync).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is accessible to group or others (unix mode `& 0o077 != 0`).
    #[error(
        "key file {} has insecure permissions {mode:04o} (group/other access); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path is not a regular file (a directory, a FIFO, a device, a socket).
    #[error("key file {} is not a regular file (it is {kind})", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file belongs to another user than the one the process runs as, who could
    /// change the key.
    #[error(
        "key file {} is owned by uid {owner}, not by this process's uid {euid}; run `chown {euid} {}`",
        path.display(),
        path.display()
    )]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The process's effective uid.
        euid: u32,
    },
    /// The directory holding the file lets another user replace it: writable by group
    /// or others without the sticky bit, or owned by another user than the process's
    /// or root.
    #[error(
        "the directory {} of a key file {reason}; run `chmod go-w {}` (or move the key)",
        dir.display(),
        dir.display()
    )]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The contents do not follow the key file format.
    #[error("malformed key file {} (line {line}): {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number, or 0 if the problem is a missing key.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The stored public key is not the one derived from the stored secret.
    #[error("key file {}: the stored public key does not match the secret key", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
    },
}

/// Parses a public key from hex text (as found in config files), ignoring
/// surrounding whitespace.
pub fn read_public_key_hex(text: &str) -> Result<PublicKey, CryptoError> {
    PublicKey::from_hex(text.trim())
}

/// The text of a key file for `key`.
fn render(key: &Keypair) -> String {
    format!(
        "{HEADER}\npublic = \"{}\"\nsecret = \"{}\"\n",
        key.public().to_hex(),
        hex::encode(key.seed())
    )
}

/// Writes `key` to `path` atomically with mode 0600. Fails with
/// [`KeyFileError::Exists`] if the path exists and `overwrite` is false.
pub fn write_key_file(path: &Path, key: &Keypair, overwrite: bool) -> Result<(), KeyFileError> {
    let io_err = |source: io::Error| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !overwrite && fs::symlink_metadata(path).is_ok() {
        return Err(KeyFileError::Exists {
            path: path.to_path_buf(),
        });
    }
    let file_name = path.file_name().ok_or_else(|| {
        io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "key file path has no file name",
        ))
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };

    let (tmp_path, mut file) = create_temp(&dir, file_name).map_err(io_err)?;
    let result = (|| {
        file.write_all(render(key).as_bytes()).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        drop(file);
        install(&tmp_path, path, overwrite)?;
        sync_dir(&dir).map_err(|source| KeyFileError::Io {
            path: dir.clone(),
            source,
        })
    })();
    // Best effort: the temp file is gone after a successful rename/link+remove;
    // after a failure, do not leave a stray copy of the secret behind.
    if tmp_path.exists() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

/// Creates a fresh, private temporary file next to the target.
fn create_temp(dir: &Path, file_name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last_err = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = std::ffi::OsString::from(".");
        name.push(file_name);
        name.push(format!(".tmp.{}.{n}", std::process::id()));
        let tmp = dir.join(name);
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("could not create a temporary file")))
}

/// Moves the finished temp file to `path`. Without `overwrite` a hard link
/// is used so an existing file is never replaced, even if it appeared after
/// the initial check.
fn install(tmp: &Path, path: &Path, overwrite: bool) -> Result<(), KeyFileError> {
    let io_err = |source: io::Error| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if overwrite {
        return fs::rename(tmp, path).map_err(io_err);
    }
    match fs::hard_link(tmp, path) {
        Ok(()) => fs::remove_file(tmp).map_err(io_err),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(KeyFileError::Exists {
            path: path.to_path_buf(),
        }),
        // Filesystems without hard links: fall back to check-then-rename.
        Err(_) => {
            if fs::symlink_metadata(path).is_ok() {
                return Err(KeyFileError::Exists {
                    path: path.to_path_buf(),
                });
            }
            fs::rename(tmp, path).map_err(io_err)
        }
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Reads a key file, checking permissions (unix), format, and that the
/// stored public key matches the secret.
pub fn read_key_file(path: &Path) -> Result<Keypair, KeyFileError> {
    let io_err = |source: io::Error| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        // opening a FIFO for reading would block until a writer comes: open without
        // blocking and look at what was opened before reading from it
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = opts.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            KeyFileError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            io_err(e)
        }
    })?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(&meta.file_type()),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let euid = rustix::process::geteuid().as_raw();
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.uid() != euid {
            return Err(KeyFileError::Owner {
                path: path.to_path_buf(),
                owner: meta.uid(),
                euid,
            });
        }
        // the directory the file really is in (through any symbolic link)
        let real = fs::canonicalize(path).map_err(io_err)?;
        if let Some(dir) = real.parent() {
            let d = fs::metadata(dir).map_err(|source| KeyFileError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            if let Some(reason) = directory_problem(d.mode(), d.uid(), euid) {
                return Err(KeyFileError::Directory {
                    dir: dir.to_path_buf(),
                    reason,
                });
            }
        }
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(KeyFileError::Malformed {
            path: path.to_path_buf(),
            line: 0,
            reason: format!("file is larger than {MAX_KEY_FILE_LEN} bytes"),
        });
    }
    parse(path, &bytes)
}

/// What a file that is not a regular file is, for the error message.
fn file_kind(t: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Why a directory with `mode` owned by `owner` lets another user than `euid` replace
/// a key file in it, if it does.
#[cfg(unix)]
fn directory_problem(mode: u32, owner: u32, euid: u32) -> Option<String> {
    const STICKY: u32 = 0o1000;
    if owner != euid && owner != 0 {
        return Some(format!(
            "is owned by uid {owner}, neither this process's uid {euid} nor root"
        ));
    }
    if mode & 0o022 != 0 && mode & STICKY == 0 {
        return Some(format!(
            "is writable by group or others (mode {:04o}) without the sticky bit",
            mode & 0o7777
        ));
    }
    None
}

/// Parses key file contents.
fn parse(path: &Path, bytes: &[u8]) -> Result<Keypair, KeyFileError> {
    let malformed = |line: usize, reason: String| KeyFileError::Malformed {
        path: path.to_path_buf(),
        line,
        reason,
    };
    // (value, line number) for each key.
    let mut public: Option<(PublicKey, usize)> = None;
    let mut secret: Option<([u8; 32], usize)> = None;

    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let text = std::str::from_utf8(raw)
            .map_err(|_| malformed(line_no, "line is not valid UTF-8".to_string()))?;
        let line = text.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| malformed(line_no, "expected `name = \"value\"`".to_string()))?;
        let name = name.trim();
        let value = value.trim();
        let hex_str = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| {
                malformed(
                    line_no,
                    format!("value of `{name}` must be a double-quoted hex string"),
                )
            })?;
        match name {
            "public" => {
                if let Some((_, first)) = public {
                    return Err(malformed(
                        line_no,
                        format!("duplicate key `public` (first on line {first})"),
                    ));
                }
                let key = PublicKey::from_hex(hex_str)
                    .map_err(|e| malformed(line_no, format!("invalid `public`: {e}")))?;
                public = Some((key, line_no));
            }
            "secret" => {
                if let Some((_, first)) = secret {
                    return Err(malformed(
                        line_no,
                        format!("duplicate key `secret` (first on line {first})"),
                    ));
                }
                let seed = decode_hex_array::<32>(hex_str, "secret key")
                    .map_err(|e| malformed(line_no, format!("invalid `secret`: {e}")))?;
                secret = Some((seed, line_no));
            }
            other => {
                return Err(malformed(
                    line_no,
                    format!("unknown key `{other}` (expected `public` or `secret`)"),
                ))
            }
        }
    }

    let (public, _) = public.ok_or_else(|| malformed(0, "missing key `public`".to_string()))?;
    let (seed, secret_line) =
        secret.ok_or_else(|| malformed(0, "missing key `secret`".to_string()))?;
    let keypair = Keypair::from_seed(&seed)
        .map_err(|e| malformed(secret_line, format!("invalid `secret`: {e}")))?;
    if keypair.public() != public {
        return Err(KeyFileError::Mismatch {
            path: path.to_path_buf(),
        });
    }
    Ok(keypair)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn keypair(seed: u64) -> Keypair {
        Keypair::generate(&mut ChaCha20Rng::seed_from_u64(seed))
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[cfg(unix)]
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Writes `contents` as a private file and reads it back as a key file.
    fn read_text(contents: &str) -> Result<Keypair, KeyFileError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        fs::write(&path, contents).unwrap();
        #[cfg(unix)]
        set_mode(&path, 0o600);
        read_key_file(&path)
    }

    fn assert_malformed(contents: &str, want_line: usize, reason_has: &str) {
        match read_text(contents) {
            Err(KeyFileError::Malformed { line, reason, .. }) => {
                assert_eq!(line, want_line, "reason: {reason}");
                assert!(
                    reason.contains(reason_has),
                    "reason {reason:?} lacks {reason_has:?}"
                );
            }
            other => panic!("expected Malformed at line {want_line}, got {other:?}"),
        }
    }

    fn lines(kp: &Keypair) -> (String, String) {
        (
            format!("public = \"{}\"", kp.public().to_hex()),
            format!("secret = \"{}\"", hex::encode(kp.seed())),
        )
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let kp = keypair(1);
        write_key_file(&path, &kp, false).unwrap();
        let back = read_key_file(&path).unwrap();
        assert_eq!(back.public(), kp.public());
        assert_eq!(back.seed(), kp.seed());
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER));
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("node.key")]);
    }

    #[cfg(unix)]
    #[test]
    fn written_file_is_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_key_file(&path, &keypair(2), false).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        write_key_file(&path, &keypair(3), true).unwrap();
        assert_eq!(mode_of(&path), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_readable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_key_file(&path, &keypair(4), false).unwrap();
        for bad in [0o644, 0o640, 0o604, 0o610, 0o601] {
            set_mode(&path, bad);
            match read_key_file(&path) {
                Err(e @ KeyFileError::Permissions { .. }) => {
                    let KeyFileError::Permissions { mode, .. } = &e else {
                        unreachable!()
                    };
                    assert_eq!(*mode, bad);
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&format!("chmod 600 {}", path.display())),
                        "{msg}"
                    );
                }
                other => panic!("mode {bad:o}: expected Permissions, got {other:?}"),
            }
        }
        set_mode(&path, 0o400);
        assert!(read_key_file(&path).is_ok());
    }

    /// A FIFO where the key should be: refused at once, where reading it would have
    /// blocked until someone wrote to it.
    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo.key");
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(&path)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_key_file(&p));
        });
        // a bound, not a synchronisation: the answer comes at once or the reader hangs
        match rx.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(Err(KeyFileError::NotRegular { kind, .. })) => assert_eq!(kind, "a FIFO"),
            Ok(other) => panic!("expected NotRegular, got {other:?}"),
            Err(_) => panic!("reading a FIFO as a key file hangs"),
        }
        // so is a directory
        match read_key_file(dir.path()) {
            Err(KeyFileError::NotRegular { kind, .. }) => assert_eq!(kind, "a directory"),
            other => panic!("expected NotRegular, got {other:?}"),
        }
    }

    /// A directory that lets another user replace the key is refused, through a
    /// symbolic link too; a sticky world-writable one (like /tmp) is not.
    #[cfg(unix)]
    #[test]
    fn a_key_in_a_directory_others_can_write_is_refused() {
        let outer = tempfile::tempdir().unwrap();
        let dir = outer.path().join("keys");
        fs::create_dir(&dir).unwrap();
        let path = dir.join("k");
        write_key_file(&path, &keypair(9), false).unwrap();
        for (mode, ok) in [
            (0o700, true),
            (0o755, true),
            (0o1777, true),
            (0o775, false),
            (0o757, false),
            (0o777, false),
        ] {
            set_mode(&dir, mode);
            match (read_key_file(&path), ok) {
                (Ok(_), true) => {}
                (Err(KeyFileError::Directory { dir: d, reason }), false) => {
                    assert_eq!(d, fs::canonicalize(&dir).unwrap());
                    assert!(reason.contains("writable"), "{reason}");
                }
                (other, _) => panic!("directory mode {mode:o}: got {other:?}"),
            }
        }
        // a link from a safe directory to a key in the unsafe one
        set_mode(&dir, 0o777);
        let safe = tempfile::tempdir().unwrap();
        let link = safe.path().join("k");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(
            read_key_file(&link),
            Err(KeyFileError::Directory { .. })
        ));
        set_mode(&dir, 0o700);
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_owned_by_another_user_is_a_problem_unless_root() {
        assert_eq!(directory_problem(0o755, 1000, 1000), None);
        assert_eq!(directory_problem(0o755, 0, 1000), None);
        assert!(directory_problem(0o755, 1001, 1000).is_some());
        assert!(directory_problem(0o700, 1001, 0).is_some());
        assert!(directory_problem(0o770, 1000, 1000).is_some());
        assert_eq!(directory_problem(0o1777, 0, 1000), None);
    }

    /// A key file owned by another user is refused (handing the file to another uid
    /// needs root, as the test and CI machines run; elsewhere it says it skipped).
    #[cfg(unix)]
    #[test]
    fn a_key_owned_by_another_user_is_refused() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_key_file(&path, &keypair(10), false).unwrap();
        let euid = rustix::process::geteuid().as_raw();
        let other = 4242;
        if euid == 0 {
            std::os::unix::fs::chown(&path, Some(other), None).expect("chown as root");
            assert_eq!(fs::metadata(&path).unwrap().uid(), other);
            match read_key_file(&path) {
                Err(KeyFileError::Owner { owner, euid: e, .. }) => {
                    assert_eq!((owner, e), (other, euid));
                }
                got => panic!("expected Owner, got {got:?}"),
            }
        } else {
            eprintln!("skipped: handing a file to another uid needs root");
        }
    }

    #[test]
    fn missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.key");
        match read_key_file(&path) {
            Err(e @ KeyFileError::NotFound { .. }) => {
                assert!(e.to_string().contains(&path.display().to_string()))
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[test]
    fn existing_file_without_overwrite_is_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let first = keypair(5);
        write_key_file(&path, &first, false).unwrap();
        match write_key_file(&path, &keypair(6), false) {
            Err(KeyFileError::Exists { path: p }) => assert_eq!(p, path),
            other => panic!("expected Exists, got {other:?}"),
        }
        // The original is untouched and no temp file is left.
        assert_eq!(read_key_file(&path).unwrap().seed(), first.seed());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // With overwrite it is replaced.
        let second = keypair(7);
        write_key_file(&path, &second, true).unwrap();
        assert_eq!(read_key_file(&path).unwrap().seed(), second.seed());
    }

    #[test]
    fn install_without_overwrite_never_replaces() {
        // The race-free path: the target appears after the initial check.
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        let target = dir.path().join("target");
        fs::write(&tmp, "new").unwrap();
        fs::write(&target, "old").unwrap();
        assert!(matches!(
            install(&tmp, &target, false),
            Err(KeyFileError::Exists { .. })
        ));
        assert_eq!(fs::read_to_string(&target).unwrap(), "old");
    }

    #[test]
    fn write_into_missing_directory_is_io_naming_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/k");
        match write_key_file(&path, &keypair(8), false) {
            Err(e @ KeyFileError::Io { .. }) => {
                assert!(e.to_string().contains(&path.display().to_string()))
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn comments_blank_lines_and_spacing_are_accepted() {
        let kp = keypair(9);
        let text = format!(
            "\n# comment\n   \n  public=\"{}\"  \r\n\t# another\nsecret   =   \"{}\"\n\n",
            kp.public().to_hex().to_uppercase(),
            hex::encode(kp.seed())
        );
        assert_eq!(read_text(&text).unwrap().seed(), kp.seed());
    }

    #[test]
    fn malformed_contents_report_line_and_reason() {
        let kp = keypair(10);
        let (public, secret) = lines(&kp);

        // Bad hex in the secret, on line 3.
        let bad_hex = format!(
            "# c\n{public}\nsecret = \"{}zz\"\n",
            &hex::encode(kp.seed())[..62]
        );
        assert_malformed(&bad_hex, 3, "secret");
        // Wrong length.
        let short = format!("{public}\nsecret = \"{}\"\n", &hex::encode(kp.seed())[..60]);
        assert_malformed(&short, 2, "expected 64 hex characters");
        // Missing secret: line 0.
        assert_malformed(&format!("# c\n{public}\n"), 0, "missing key `secret`");
        // Missing public: line 0.
        assert_malformed(&format!("{secret}\n"), 0, "missing key `public`");
        // Unknown key on line 2.
        assert_malformed(
            &format!("{public}\nextra = \"00\"\n{secret}\n"),
            2,
            "unknown key `extra`",
        );
        // Duplicate key on line 3.
        assert_malformed(
            &format!("{public}\n{secret}\n{public}\n"),
            3,
            "duplicate key `public`",
        );
        // Not a key/value line.
        assert_malformed(&format!("{public}\njunk\n{secret}\n"), 2, "expected");
        // Unquoted value.
        assert_malformed(
            &format!("public = {}\n{secret}\n", kp.public().to_hex()),
            1,
            "double-quoted",
        );
        // A weak public key is rejected as invalid.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert_malformed(
            &format!("public = \"{}\"\n{secret}\n", hex::encode(weak)),
            1,
            "weak",
        );
        // Invalid UTF-8 on line 2.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let mut bytes = format!("{public}\n").into_bytes();
        bytes.extend_from_slice(b"secret = \"\xff\"\n");
        fs::write(&path, &bytes).unwrap();
        #[cfg(unix)]
        set_mode(&path, 0o600);
        assert!(matches!(
            read_key_file(&path),
            Err(KeyFileError::Malformed { line: 2, .. })
        ));
    }

    #[test]
    fn mismatched_public_key_is_mismatch() {
        let kp = keypair(11);
        let other = keypair(12);
        let text = format!(
            "public = \"{}\"\nsecret = \"{}\"\n",
            other.public().to_hex(),
            hex::encode(kp.seed())
        );
        match read_text(&text) {
            Err(e @ KeyFileError::Mismatch { .. }) => {
                assert!(e.to_string().contains("does not match"))
            }
            other => panic!("expected Mismatch, got {other:?}"),
        }
    }

    #[test]
    fn oversized_file_is_malformed() {
        let text = "#".repeat(MAX_KEY_FILE_LEN as usize + 10);
        assert_malformed(&text, 0, "larger than");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("named.key");
        fs::write(&path, "bogus\n").unwrap();
        #[cfg(unix)]
        set_mode(&path, 0o600);
        let msg = read_key_file(&path).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn read_public_key_hex_trims() {
        let kp = keypair(13);
        let text = format!("  {}\n", kp.public().to_hex());
        assert_eq!(read_public_key_hex(&text), Ok(kp.public()));
        assert!(read_public_key_hex("  zz \n").is_err());
    }
}
