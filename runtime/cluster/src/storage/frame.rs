//! The one record format of every controller file: a length, a CRC32C, a payload.
//!
//! `/// [length:4 LE][crc32c:4 LE][payload:length]`
//!
//! The CRC (Castagnoli, as the partition log uses) covers the length bytes and the
//! payload, so a torn or corrupted length is caught as surely as a corrupted payload.
//! Payloads are JSON. Files replaced as a whole (vote, committed, purged, snapshot)
//! are written to a temporary name, synced, renamed over the old one, and the
//! directory is synced, so a crash leaves the old file or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Bytes before a frame's payload.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is cut short")]
    Truncated,
    #[error("frame says {len} bytes, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("frame checksum does not match")]
    Checksum,
}

/// Appends `payload` as one frame. The caller has checked its length.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("callers cap payloads far below 4 GiB");
    let len_bytes = len.to_le_bytes();
    let crc = crc32c_update(crc32c_update(!0, &len_bytes), payload) ^ !0;
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads the frame at the start of `buf`: its payload and the bytes it spans.
pub fn decode(buf: &[u8], max: usize) -> Result<(&[u8], usize), FrameError> {
    let Some((header, rest)) = buf.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return Err(FrameError::Truncated);
    };
    let (len_bytes, crc_bytes) = header.split_at(4);
    let len_bytes: [u8; 4] = len_bytes.try_into().expect("split at 4 of 8");
    let crc_bytes: [u8; 4] = crc_bytes.try_into().expect("split at 4 of 8");
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > max {
        return Err(FrameError::TooLong { len, max });
    }
    let payload = rest.get(..len).ok_or(FrameError::Truncated)?;
    let crc = crc32c_update(crc32c_update(!0, &len_bytes), payload) ^ !0;
    if crc != u32::from_le_bytes(crc_bytes) {
        return Err(FrameError::Checksum);
    }
    Ok((payload, FRAME_HEADER_BYTES + len))
}

/// Replaces `path` with `frames`, one frame each, so that a crash leaves either the
/// old file or the new one, never a mix.
pub fn write_file_atomically(path: &Path, frames: &[&[u8]]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(frames.iter().map(|f| f.len() + FRAME_HEADER_BYTES).sum());
    for frame in frames {
        encode(frame, &mut bytes);
    }
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads a file written by [`write_file_atomically`]: exactly `count` frames of at
/// most `max` bytes each. `None` when the file does not exist.
pub fn read_file(path: &Path, count: usize, max: usize) -> io::Result<Option<Vec<Vec<u8>>>> {
    let bytes = match File::open(path) {
        Ok(file) => {
            let limit = count * (max + FRAME_HEADER_BYTES);
            let len = file.metadata()?.len();
            if len > limit as u64 {
                return Err(invalid(path, &format!("{len} bytes, more than {limit}")));
            }
            fs::read(path)?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut frames = Vec::with_capacity(count);
    let mut at = 0;
    for _ in 0..count {
        let (payload, used) =
            decode(&bytes[at..], max).map_err(|e| invalid(path, &e.to_string()))?;
        frames.push(payload.to_vec());
        at += used;
    }
    if at != bytes.len() {
        return Err(invalid(path, "bytes after the last frame"));
    }
    Ok(Some(frames))
}

/// Makes a rename or a file creation or removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn invalid(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), one table lookup per byte:
/// controller files are small, so the table is fast enough and needs no dependency.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc32c_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for byte in bytes {
        crc = CRC32C_TABLE[((crc ^ u32::from(*byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c_update(!0, bytes) ^ !0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn frames_round_trip_and_damage_is_caught() {
        let mut buf = Vec::new();
        encode(b"hello", &mut buf);
        encode(b"", &mut buf);
        let (first, used) = decode(&buf, 16).expect("valid");
        assert_eq!((first, used), (&b"hello"[..], 13));
        let (second, used2) = decode(&buf[used..], 16).expect("valid");
        assert_eq!((second, used + used2), (&b""[..], buf.len()));

        assert_eq!(decode(&buf[..12], 16), Err(FrameError::Truncated));
        assert_eq!(decode(&buf[..3], 16), Err(FrameError::Truncated));
        assert_eq!(decode(&buf, 4), Err(FrameError::TooLong { len: 5, max: 4 }));
        for i in 0..13 {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad, 16).is_err(), "flipped byte {i} went unnoticed");
        }
    }

    #[test]
    fn atomic_files_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vote");
        assert_eq!(read_file(&path, 1, 64).expect("reads"), None);
        write_file_atomically(&path, &[b"one"]).expect("writes");
        write_file_atomically(&path, &[b"two", b"three"]).expect("writes");
        assert_eq!(
            read_file(&path, 2, 64).expect("reads"),
            Some(vec![b"two".to_vec(), b"three".to_vec()])
        );
        assert!(
            read_file(&path, 1, 64).is_err(),
            "trailing frame is refused"
        );
        assert!(!dir.path().join("vote.tmp").exists());
        fs::write(&path, b"garbage!garbage!").expect("writes");
        assert!(read_file(&path, 1, 64).is_err());
    }
}
