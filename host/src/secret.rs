//! The network's shared secret as the host gets it: a password (`--password`,
//! `WEFT_PASSWORD`) or a random 256-bit key file (`weft keygen`, `--key-file`), turned into
//! the core's [`Psk`]; and the generator every handshake secret comes from.
//!
//! Not here: what the secret does on the wire (SPAKE2, sealing) — that is
//! `weft_core::crypto`.

use crate::error::{Error, Result};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use weft_core::crypto::{ChaChaKeyRng, KEY_LEN_BYTES, Psk};
use zeroize::Zeroizing;

/// What the start-up log says when there is no secret: exactly what is and is not
/// protected then.
pub(crate) const UNENCRYPTED_WARNING: &str = "no --password or --key-file: peers are not \
authenticated (anyone who can reach this router's port can join the network, under any \
name) and container traffic crosses the underlay in the clear; only the control channel is \
sealed, and only against passive listeners. Give every peer the same --password or \
--key-file (see `weft keygen`)";

/// Longest key file read: 64 hex digits plus generous whitespace.
const KEY_FILE_LEN_MAX: u64 = 256;

/// What the router encrypts with, from `--password` or `--key-file` (clap makes them
/// exclusive). The raw password is wiped as soon as it is turned into a key.
pub(crate) fn psk(password: Option<String>, key_file: Option<&Path>) -> Result<Option<Psk>> {
    if let Some(pw) = password {
        let pw = Zeroizing::new(pw);
        if pw.is_empty() {
            return Err(Error::Other(
                "--password is empty: give a password, or leave it out to run unencrypted".into(),
            ));
        }
        return Ok(Some(Psk::from_password(pw.as_bytes())));
    }
    key_file.map(read_key_file).transpose()
}

/// Reads a key file written by [`keygen`]: 64 hex digits. Refused when group or others
/// may read it (as ssh refuses such a private key).
pub(crate) fn read_key_file(path: &Path) -> Result<Psk> {
    let bad = |detail: String| Error::Other(format!("key file {}: {detail}", path.display()));
    let mut f = std::fs::File::open(path).map_err(Error::io("open key file", path))?;
    let meta = f.metadata().map_err(Error::io("stat key file", path))?;
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "mode {:04o} lets other users read it; run `chmod 600 {}`",
            meta.mode() & 0o7777,
            path.display()
        )));
    }
    let mut text = Zeroizing::new(String::new());
    Read::by_ref(&mut f)
        .take(KEY_FILE_LEN_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(format!("not readable as text: {e}")))?;
    if text.len() as u64 > KEY_FILE_LEN_MAX {
        return Err(bad("too long for a key (expected 64 hex digits)".into()));
    }
    let hex = text.trim();
    if hex.len() != 2 * KEY_LEN_BYTES || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "expected {} hex digits (make one with `weft keygen PATH`)",
            2 * KEY_LEN_BYTES
        )));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN_BYTES]);
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| bad("bad hex digit".into()))?;
    }
    Ok(Psk::from_key(&key))
}

/// `weft keygen PATH`: writes a fresh random key (64 hex digits and a newline) to a new
/// file, mode 0600. Never overwrites: an existing file (or a symlink) is an error.
pub(crate) fn keygen(path: &Path) -> Result<()> {
    let key = Zeroizing::new(crate::daemon::os_random::<KEY_LEN_BYTES>()?);
    let mut text = Zeroizing::new(String::with_capacity(2 * KEY_LEN_BYTES + 1));
    for b in key.iter() {
        text.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        text.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    text.push('\n');
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::Other(format!(
                "{} exists: weft keygen never overwrites a key; remove it first or pick another path",
                path.display()
            )),
            _ => Error::io("create key file", path)(e),
        })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(Error::io("write key file", path))?;
    Ok(())
}

/// The generator every ephemeral secret comes from: ChaCha20 with fast key erasure,
/// seeded with 256 bits from the OS. The router's public stream (uid, jitter) is seeded
/// separately, so nothing it sends in the clear says anything about this one.
pub(crate) fn key_rng() -> Result<ChaChaKeyRng> {
    let seed = Zeroizing::new(crate::daemon::os_random::<32>()?);
    Ok(ChaChaKeyRng::from_seed(*seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use weft_core::crypto::{Handshake, KeyRng};

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "weft-secret-{}-{:x}",
            std::process::id(),
            u64::from_le_bytes(crate::daemon::os_random::<8>().unwrap())
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn keygen_writes_a_private_key_that_reads_back_and_never_overwrites() {
        let d = dir();
        let p = d.join("weft.key");
        keygen(&p).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.len(), 65, "{text:?}");
        let k1 = read_key_file(&p).unwrap();
        let err = keygen(&p).unwrap_err().to_string();
        assert!(err.contains("never overwrites"), "{err}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text, "left alone");
        let q = d.join("other.key");
        keygen(&q).unwrap();
        assert_ne!(read_key_file(&q).unwrap(), k1, "each key is fresh");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_key_files_get_one_clear_line() {
        let d = dir();
        let p = d.join("k");
        for (body, mode, want) in [
            ("00".repeat(32), 0o644, "chmod 600"),
            ("zz".repeat(32), 0o600, "64 hex digits"),
            ("ab".repeat(31), 0o600, "64 hex digits"),
            ("ab".repeat(200), 0o600, "too long"),
        ] {
            std::fs::write(&p, &body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_key_file(&p).unwrap_err().to_string();
            assert!(err.contains(want), "{body:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        std::fs::write(&p, format!("  {}\n", "ab".repeat(32))).unwrap();
        assert_eq!(read_key_file(&p).unwrap(), Psk::from_key(&[0xab; 32]));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_password_and_an_empty_one() {
        assert_eq!(
            psk(Some("pw".into()), None).unwrap(),
            Some(Psk::from_password(b"pw"))
        );
        assert!(psk(Some(String::new()), None).is_err());
        assert_eq!(psk(None, None).unwrap(), None);
    }

    #[test]
    fn two_hosts_get_different_key_streams() {
        // The host's key stream is seeded from the OS, not from the router seed: two
        // routers started alike still get different handshake secrets.
        let (mut a, mut b) = (key_rng().unwrap(), key_rng().unwrap());
        let (x, y): (&mut dyn KeyRng, &mut dyn KeyRng) = (&mut a, &mut b);
        assert_ne!(
            Handshake::start(x, None).public_bytes(),
            Handshake::start(y, None).public_bytes()
        );
    }
}
