//! Reading a zip archive's central directory and unpacking it into a fresh directory.
//!
//! Only what code packages need: one disk, no ZIP64, no encryption, entries stored (method 0)
//! or deflated (method 8, [`super::inflate`]). Every entry name is checked before anything is
//! written: no absolute path, no `..` (or `.` or empty) component, no backslash or control
//! character, valid UTF-8; symlinks and other special files are refused. The limits are
//! applied to what the archive really holds: the entry count as the directory is walked, the
//! unpacked bytes as they are inflated (the sizes the headers declare are checked against
//! the real output, never trusted). Each entry's CRC-32 is verified.

use super::inflate::{self, InflateError};
use std::borrow::Cow;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const EOCD_SIGNATURE: u32 = 0x0605_4b50;
const CENTRAL_SIGNATURE: u32 = 0x0201_4b50;
const LOCAL_SIGNATURE: u32 = 0x0403_4b50;
const EOCD_LEN: usize = 22;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;
/// Longest entry name accepted, in bytes.
const MAX_NAME_BYTES: usize = 1024;
/// The host byte of "version made by" for Unix, whose external attributes carry a mode.
const HOST_UNIX: u8 = 3;
const MODE_TYPE: u32 = 0o170_000;
const MODE_FILE: u32 = 0o100_000;
const MODE_DIR: u32 = 0o040_000;
const MODE_SYMLINK: u32 = 0o120_000;

/// What an archive may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZipLimits {
    /// Most bytes all entries together may unpack to.
    pub max_unpacked_bytes: u64,
    /// Most entries (files and directories).
    pub max_entries: u32,
}

/// What an unpacking produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// Files written.
    pub files: u32,
    /// Bytes written.
    pub bytes: u64,
}

/// One entry of the central directory, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its path inside the package, without a trailing `/`.
    pub name: String,
    /// A directory (name ending in `/`, or a directory mode).
    pub is_dir: bool,
    /// Executable by its owner (a Unix mode with any execute bit).
    pub executable: bool,
    method: u16,
    crc: u32,
    compressed: u64,
    declared: u64,
    local_offset: u64,
}

/// Where an archive's bytes are read from: memory, or a file read piece by piece (the
/// directory, then each entry's data in pieces), so that unpacking a large package holds
/// neither it nor any of its entries whole.
pub trait Source {
    /// The archive's length in bytes.
    fn size(&self) -> u64;
    /// `len` bytes at `offset`, which the caller has checked lie inside the archive.
    fn read_at(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, String>;
    /// A reader of the `len` bytes at `offset` (checked by the caller as above), which reads
    /// them piece by piece: an entry's compressed data is never held whole.
    fn section(&self, offset: u64, len: u64) -> Result<Box<dyn Read + '_>, String>;
}

impl Source for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, String> {
        let start = usize::try_from(offset).map_err(|_| "offset out of range".to_string())?;
        start
            .checked_add(len)
            .and_then(|end| self.get(start..end))
            .map(Cow::Borrowed)
            .ok_or_else(|| "read past the end of the archive".to_string())
    }

    fn section(&self, offset: u64, len: u64) -> Result<Box<dyn Read + '_>, String> {
        let len = usize::try_from(len).map_err(|_| "length out of range".to_string())?;
        match self.read_at(offset, len)? {
            Cow::Borrowed(bytes) => Ok(Box::new(bytes)),
            Cow::Owned(bytes) => Ok(Box::new(io::Cursor::new(bytes))),
        }
    }
}

impl Source for Vec<u8> {
    fn size(&self) -> u64 {
        self.as_slice().size()
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, String> {
        self.as_slice().read_at(offset, len)
    }

    fn section(&self, offset: u64, len: u64) -> Result<Box<dyn Read + '_>, String> {
        self.as_slice().section(offset, len)
    }
}

impl Source for fs::File {
    fn size(&self) -> u64 {
        self.metadata().map_or(0, |m| m.len())
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, String> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, offset)
            .map_err(|e| format!("cannot read the archive: {e}"))?;
        Ok(Cow::Owned(buf))
    }

    fn section(&self, offset: u64, len: u64) -> Result<Box<dyn Read + '_>, String> {
        Ok(Box::new(FileSection {
            file: self,
            offset,
            left: len,
        }))
    }
}

/// `left` bytes of a file from `offset`, read with `pread` (the file's position is not used,
/// so sections of one file do not disturb each other).
struct FileSection<'f> {
    file: &'f fs::File,
    offset: u64,
    left: u64,
}

impl Read for FileSection<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = FileExt::read_at(self.file, &mut buf[..want], self.offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside an entry",
            ));
        }
        self.offset += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

/// The bytes `[offset, offset + len)` of `source`, if they lie inside it.
fn read_inside<S: Source + ?Sized>(
    source: &S,
    offset: u64,
    len: u64,
) -> Option<Result<Cow<'_, [u8]>, String>> {
    let end = offset.checked_add(len)?;
    if end > source.size() {
        return None;
    }
    Some(source.read_at(offset, usize::try_from(len).ok()?))
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// Reads and checks the central directory.
pub fn entries<S: Source + ?Sized>(archive: &S, limits: &ZipLimits) -> Result<Vec<Entry>, String> {
    let not_zip = || "not a zip archive (no end of central directory)".to_string();
    // The end record is within the last 22 bytes plus the longest comment.
    let tail_len = archive
        .size()
        .min((EOCD_LEN + usize::from(u16::MAX)) as u64);
    let tail_start = archive.size() - tail_len;
    let tail = read_inside(archive, tail_start, tail_len).ok_or_else(not_zip)??;
    let eocd = find_eocd(&tail).ok_or_else(not_zip)?;
    let disk = u16_at(&tail, eocd + 4).unwrap_or(1);
    let cd_disk = u16_at(&tail, eocd + 6).unwrap_or(1);
    let count = u16_at(&tail, eocd + 10).unwrap_or(0);
    let cd_size = u32_at(&tail, eocd + 12).unwrap_or(0);
    let cd_offset = u32_at(&tail, eocd + 16).unwrap_or(0);
    let eocd_offset = tail_start + eocd as u64;
    if disk != 0 || cd_disk != 0 {
        return Err("multi-disk zip archives are not supported".into());
    }
    if count == 0xffff || cd_size == u32::MAX || cd_offset == u32::MAX {
        return Err("ZIP64 archives are not supported".into());
    }
    if u32::from(count) > limits.max_entries {
        return Err(format!(
            "the archive has {count} entries, more than the limit of {}",
            limits.max_entries
        ));
    }
    let outside = || "the central directory lies outside the archive".to_string();
    if u64::from(cd_offset) + u64::from(cd_size) > eocd_offset {
        return Err(outside());
    }
    let directory =
        read_inside(archive, u64::from(cd_offset), u64::from(cd_size)).ok_or_else(outside)??;
    let mut at = 0;
    let end = directory.len();
    let mut list: Vec<Entry> = Vec::with_capacity(usize::from(count));
    while at < end {
        if list.len() >= limits.max_entries as usize {
            return Err(format!(
                "the archive has more than the limit of {} entries",
                limits.max_entries
            ));
        }
        let (entry, next) = central_entry(&directory, at, end)?;
        if list.iter().any(|e| e.name == entry.name) {
            return Err(format!("zip entry {} appears twice", entry.name));
        }
        list.push(entry);
        at = next;
    }
    if list.len() != usize::from(count) {
        return Err(format!(
            "the central directory holds {} entries, its end record says {count}",
            list.len()
        ));
    }
    Ok(list)
}

/// The end-of-central-directory record: searched backwards over the longest comment.
fn find_eocd(archive: &[u8]) -> Option<usize> {
    let last = archive.len().checked_sub(EOCD_LEN)?;
    let first = last.saturating_sub(usize::from(u16::MAX));
    (first..=last).rev().find(|&at| {
        u32_at(archive, at) == Some(EOCD_SIGNATURE)
            && u16_at(archive, at + 20).map(|c| at + EOCD_LEN + usize::from(c))
                == Some(archive.len())
    })
}

fn central_entry(archive: &[u8], at: usize, end: usize) -> Result<(Entry, usize), String> {
    let corrupt = || "the central directory is corrupt".to_string();
    if at + CENTRAL_LEN > end || u32_at(archive, at) != Some(CENTRAL_SIGNATURE) {
        return Err(corrupt());
    }
    let made_by_host = archive[at + 5];
    let flags = u16_at(archive, at + 8).ok_or_else(corrupt)?;
    let method = u16_at(archive, at + 10).ok_or_else(corrupt)?;
    let crc = u32_at(archive, at + 16).ok_or_else(corrupt)?;
    let compressed = u32_at(archive, at + 20).ok_or_else(corrupt)?;
    let declared = u32_at(archive, at + 24).ok_or_else(corrupt)?;
    let name_len = usize::from(u16_at(archive, at + 28).ok_or_else(corrupt)?);
    let extra_len = usize::from(u16_at(archive, at + 30).ok_or_else(corrupt)?);
    let comment_len = usize::from(u16_at(archive, at + 32).ok_or_else(corrupt)?);
    let external = u32_at(archive, at + 38).ok_or_else(corrupt)?;
    let local_offset = u32_at(archive, at + 42).ok_or_else(corrupt)?;
    let next = at + CENTRAL_LEN + name_len + extra_len + comment_len;
    if next > end {
        return Err(corrupt());
    }
    let raw_name = &archive[at + CENTRAL_LEN..at + CENTRAL_LEN + name_len];
    let shown = String::from_utf8_lossy(raw_name).into_owned();
    let (name, named_dir) = check_name(raw_name)?;
    if flags & 1 != 0 {
        return Err(format!("zip entry {shown} is encrypted"));
    }
    if compressed == u32::MAX || declared == u32::MAX || local_offset == u32::MAX {
        return Err("ZIP64 archives are not supported".into());
    }
    let mode = if made_by_host == HOST_UNIX {
        external >> 16
    } else {
        0
    };
    let kind = mode & MODE_TYPE;
    if kind == MODE_SYMLINK {
        return Err(format!("zip entry {shown} is a symlink"));
    }
    if kind != 0 && kind != MODE_FILE && kind != MODE_DIR {
        return Err(format!("zip entry {shown} is not a file or a directory"));
    }
    // MS-DOS attributes: 0x10 marks a directory.
    let is_dir = named_dir || kind == MODE_DIR || (mode == 0 && external & 0x10 != 0);
    if !is_dir && method != 0 && method != 8 {
        return Err(format!(
            "zip entry {shown} uses compression method {method}; only stored (0) and deflate (8) are supported"
        ));
    }
    let entry = Entry {
        name,
        is_dir,
        executable: mode & 0o111 != 0,
        method,
        crc,
        compressed: u64::from(compressed),
        declared: u64::from(declared),
        local_offset: u64::from(local_offset),
    };
    Ok((entry, next))
}

/// Checks an entry's name; returns it without a trailing `/`, and whether it had one.
pub fn check_name(raw: &[u8]) -> Result<(String, bool), String> {
    let shown = String::from_utf8_lossy(raw);
    let Ok(name) = std::str::from_utf8(raw) else {
        return Err(format!("zip entry {shown} has a name that is not UTF-8"));
    };
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "zip entry {name:?} has an empty or overlong name (at most {MAX_NAME_BYTES} bytes)"
        ));
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!(
            "zip entry {name:?} has a name with a control character or a backslash"
        ));
    }
    if name.starts_with('/') {
        return Err(format!("zip entry {name} has an absolute path"));
    }
    let (path, is_dir) = match name.strip_suffix('/') {
        Some(path) => (path, true),
        None => (name, false),
    };
    for component in path.split('/') {
        match component {
            ".." => return Err(format!("zip entry {name} escapes the package")),
            "" | "." => {
                return Err(format!(
                    "zip entry {name} has an empty or \".\" path component"
                ));
            }
            _ => {}
        }
    }
    Ok((path.to_owned(), is_dir))
}

/// Unpacks `archive` into `dest`, a new empty directory nothing else writes to. Stops at the
/// first problem; the caller removes `dest` then.
pub fn unpack<S: Source + ?Sized>(
    archive: &S,
    dest: &Path,
    limits: &ZipLimits,
) -> Result<Unpacked, String> {
    let list = entries(archive, limits)?;
    let mut done = Unpacked { files: 0, bytes: 0 };
    for entry in &list {
        let path = dest.join(&entry.name);
        if entry.is_dir {
            fs::create_dir_all(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let mut data = entry_data(archive, entry)?;
        let budget = limits.max_unpacked_bytes.saturating_sub(done.bytes);
        let written = write_entry(entry, &mut data, &path, budget).map_err(|why| match why {
            WriteError::TooLarge => format!(
                "the archive unpacks to more than the limit of {} bytes",
                limits.max_unpacked_bytes
            ),
            WriteError::Other(why) => why,
        })?;
        done.bytes += written;
        done.files += 1;
    }
    Ok(done)
}

/// A reader of an entry's compressed bytes, found through its local header.
fn entry_data<'a, S: Source + ?Sized>(
    archive: &'a S,
    entry: &Entry,
) -> Result<Box<dyn Read + 'a>, String> {
    let outside = || format!("zip entry {}'s data lies outside the archive", entry.name);
    let at = entry.local_offset;
    let header = read_inside(archive, at, LOCAL_LEN as u64).ok_or_else(outside)??;
    if u32_at(&header, 0) != Some(LOCAL_SIGNATURE) {
        return Err(format!(
            "zip entry {}'s local header is missing",
            entry.name
        ));
    }
    let name_len = u64::from(u16_at(&header, 26).ok_or_else(outside)?);
    let extra_len = u64::from(u16_at(&header, 28).ok_or_else(outside)?);
    let start = at + LOCAL_LEN as u64 + name_len + extra_len;
    let inside = start
        .checked_add(entry.compressed)
        .is_some_and(|end| end <= archive.size());
    if !inside {
        return Err(outside());
    }
    archive.section(start, entry.compressed)
}

enum WriteError {
    TooLarge,
    Other(String),
}

/// Writes one file from its compressed bytes `data`, inflating it within `budget` bytes;
/// checks its size and CRC-32.
fn write_entry(
    entry: &Entry,
    data: &mut dyn Read,
    path: &Path,
    budget: u64,
) -> Result<u64, WriteError> {
    let mode = if entry.executable { 0o755 } else { 0o644 };
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| WriteError::Other(format!("cannot create {}: {e}", path.display())))?;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
    let mut crc = Crc32::new();
    let mut sink = |piece: &[u8]| {
        crc.update(piece);
        out.write_all(piece)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let written = match entry.method {
        0 => {
            if entry.compressed > budget {
                return Err(WriteError::TooLarge);
            }
            copy_stored(entry, data, &mut sink)?
        }
        _ => match inflate::inflate(data, budget, &mut sink) {
            Ok(n) => n,
            Err(InflateError::TooLarge(_)) => return Err(WriteError::TooLarge),
            Err(InflateError::Sink(why)) => return Err(WriteError::Other(why)),
            Err(InflateError::Input(why)) => {
                return Err(WriteError::Other(format!(
                    "zip entry {}: {why}",
                    entry.name
                )));
            }
            Err(e) => return Err(WriteError::Other(format!("zip entry {}: {e}", entry.name))),
        },
    };
    out.flush()
        .map_err(|e| WriteError::Other(format!("cannot write {}: {e}", path.display())))?;
    if written != entry.declared {
        return Err(WriteError::Other(format!(
            "zip entry {} unpacks to {written} bytes, its header says {}",
            entry.name, entry.declared
        )));
    }
    if crc.finish() != entry.crc {
        return Err(WriteError::Other(format!(
            "zip entry {} fails its CRC-32 check",
            entry.name
        )));
    }
    Ok(written)
}

/// Copies a stored entry's bytes to `sink` in pieces.
fn copy_stored(
    entry: &Entry,
    data: &mut dyn Read,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<u64, WriteError> {
    let mut piece = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    while copied < entry.compressed {
        let n = match data.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                return Err(WriteError::Other(format!(
                    "zip entry {}: cannot read its data: {err}",
                    entry.name
                )));
            }
        };
        sink(&piece[..n]).map_err(WriteError::Other)?;
        copied += n as u64;
    }
    Ok(copied)
}

/// The CRC-32 of `data`, as zip records it (for tests that build archives by hand).
#[cfg(test)]
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(data);
    crc.finish()
}

/// CRC-32 (IEEE 802.3, reflected), as zip uses it.
struct Crc32 {
    value: u32,
}

/// The reflected polynomial.
const CRC_POLY: u32 = 0xedb8_8320;

/// Tables for eight bytes at a time: `[0]` is the classic byte table, and `[k][i]` the CRC of
/// byte `i` followed by `k` zero bytes. Every entry's CRC is checked in pieces of
/// about 64 KiB, so the byte-at-a-time loop made CRC-32 a tenth of the unpacking time.
static CRC_TABLES: [[u32; 256]; 8] = crc_tables();

const fn crc_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                CRC_POLY ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        tables[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let previous = tables[k - 1][i];
            tables[k][i] = (previous >> 8) ^ tables[0][(previous & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

impl Crc32 {
    fn new() -> Self {
        Crc32 { value: 0xffff_ffff }
    }

    fn update(&mut self, data: &[u8]) {
        let t = &CRC_TABLES;
        let mut crc = self.value;
        let mut words = data.chunks_exact(8);
        for word in &mut words {
            let lo = u32::from_le_bytes([word[0], word[1], word[2], word[3]]) ^ crc;
            let hi = u32::from_le_bytes([word[4], word[5], word[6], word[7]]);
            crc = t[7][(lo & 0xff) as usize]
                ^ t[6][((lo >> 8) & 0xff) as usize]
                ^ t[5][((lo >> 16) & 0xff) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][(hi & 0xff) as usize]
                ^ t[2][((hi >> 8) & 0xff) as usize]
                ^ t[1][((hi >> 16) & 0xff) as usize]
                ^ t[0][(hi >> 24) as usize];
        }
        for &byte in words.remainder() {
            crc = t[0][((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
        }
        self.value = crc;
    }

    fn finish(&self) -> u32 {
        self.value ^ 0xffff_ffff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    #[test]
    fn crc32_eight_bytes_at_a_time_matches_the_definition() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
        // Bit by bit, straight from the polynomial.
        let reference = |data: &[u8]| {
            let mut crc = 0xffff_ffffu32;
            for &byte in data {
                crc ^= u32::from(byte);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        CRC_POLY ^ (crc >> 1)
                    } else {
                        crc >> 1
                    };
                }
            }
            crc ^ 0xffff_ffff
        };
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(crc32(&data[..len]), reference(&data[..len]), "length {len}");
        }
        // Fed in pieces of every size, as entries are.
        for piece in 1..20 {
            let mut crc = Crc32::new();
            data.chunks(piece).for_each(|p| crc.update(p));
            assert_eq!(crc.finish(), reference(&data), "pieces of {piece}");
        }
    }

    const LIMITS: ZipLimits = ZipLimits {
        max_unpacked_bytes: 64 << 20,
        max_entries: 1000,
    };

    /// Builds a zip with python's `zipfile`; `script` adds entries to `z`.
    fn python_zip(script: &str) -> Vec<u8> {
        let program = format!(
            "import io, sys, zipfile\nb = io.BytesIO()\nz = zipfile.ZipFile(b, 'w')\n{script}\nz.close()\nsys.stdout.buffer.write(b.getvalue())\n"
        );
        let out = Command::new("python3")
            .arg("-c")
            .arg(&program)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "noslate-zip-{name}-{}-{}",
            std::process::id(),
            crate::rand::Rng::from_entropy().next_u64()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// An archive file whose reads are watched: the largest piece any read asked for.
    struct WatchedFile {
        file: fs::File,
        largest_read: std::cell::Cell<usize>,
    }

    impl Source for WatchedFile {
        fn size(&self) -> u64 {
            self.file.size()
        }

        fn read_at(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, String> {
            self.largest_read.set(self.largest_read.get().max(len));
            Source::read_at(&self.file, offset, len)
        }

        fn section(&self, offset: u64, len: u64) -> Result<Box<dyn Read + '_>, String> {
            let inner = self.file.section(offset, len)?;
            Ok(Box::new(WatchedRead { inner, watch: self }))
        }
    }

    struct WatchedRead<'a> {
        inner: Box<dyn Read + 'a>,
        watch: &'a WatchedFile,
    }

    impl Read for WatchedRead<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let largest = &self.watch.largest_read;
            largest.set(largest.get().max(buf.len()));
            self.inner.read(buf)
        }
    }

    #[test]
    fn large_entries_are_read_from_the_archive_file_in_pieces_never_whole() {
        let script = r#"
import random
r = random.Random(9)
noise = bytes(r.getrandbits(8) for _ in range(3 << 20))
z.writestr('stored.bin', noise, compress_type=zipfile.ZIP_STORED)
z.writestr('deflated.bin', noise, compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
"#;
        let dir = scratch("pieces");
        let path = dir.join("package.zip");
        fs::write(&path, python_zip(script)).unwrap();
        let archive = WatchedFile {
            file: fs::File::open(&path).unwrap(),
            largest_read: std::cell::Cell::new(0),
        };
        let dest = dir.join("out");
        fs::create_dir(&dest).unwrap();
        let done = unpack(&archive, &dest, &LIMITS).unwrap();
        assert_eq!(done.files, 2);
        let stored = fs::read(dest.join("stored.bin")).unwrap();
        assert_eq!(stored.len(), 3 << 20);
        assert_eq!(fs::read(dest.join("deflated.bin")).unwrap(), stored);
        // Each entry is 3 MiB compressed: it went through in pieces of at most 64 KiB (the
        // largest read is the search for the end of the directory: 64 KiB and 22 bytes).
        assert!(
            archive.largest_read.get() <= 64 * 1024 + 22,
            "largest read {} bytes",
            archive.largest_read.get()
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn python_zips_unpack_stored_and_deflated_at_every_level() {
        let script = r#"
import random
r = random.Random(5)
text = ''.join(r.choice('abc def\n') for _ in range(200000)).encode()
noise = bytes(r.getrandbits(8) for _ in range(70000))
z.writestr('stored.txt', text, compress_type=zipfile.ZIP_STORED)
for level in (0, 1, 6, 9):
    z.writestr(zipfile.ZipInfo('lvl%d/text' % level), text, compress_type=zipfile.ZIP_DEFLATED, compresslevel=level)
    z.writestr('lvl%d/noise' % level, noise, compress_type=zipfile.ZIP_DEFLATED, compresslevel=level)
z.writestr('empty', b'')
z.writestr('empty-deflated', b'', compress_type=zipfile.ZIP_DEFLATED)
z.writestr('dir/', b'')
z.writestr('dir/sub/x.js', b'module.exports = 1;\n', compress_type=zipfile.ZIP_DEFLATED)
i = zipfile.ZipInfo('bin/run')
i.external_attr = 0o100755 << 16
i.create_system = 3
z.writestr(i, b'#!/bin/sh\n')
"#;
        let archive: Vec<u8> = python_zip(script);
        let dest = scratch("levels");
        let done = unpack(&archive, &dest, &LIMITS).unwrap();
        assert_eq!(done.files, 13);
        let text = fs::read(dest.join("stored.txt")).unwrap();
        assert_eq!(text.len(), 200_000);
        for level in [0, 1, 6, 9] {
            assert_eq!(
                fs::read(dest.join(format!("lvl{level}/text"))).unwrap(),
                text
            );
            assert_eq!(
                fs::read(dest.join(format!("lvl{level}/noise")))
                    .unwrap()
                    .len(),
                70_000
            );
        }
        assert_eq!(fs::read(dest.join("empty")).unwrap(), b"");
        assert_eq!(fs::read(dest.join("empty-deflated")).unwrap(), b"");
        assert!(dest.join("dir").is_dir());
        assert_eq!(
            fs::read(dest.join("dir/sub/x.js")).unwrap(),
            b"module.exports = 1;\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dest.join("bin/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);

        // The same archive read piece by piece from a file unpacks to the same tree.
        let file = dest.with_extension("zip");
        fs::write(&file, &archive).unwrap();
        let from_file = scratch("levels-file");
        let opened = fs::File::open(&file).unwrap();
        assert_eq!(unpack(&opened, &from_file, &LIMITS).unwrap(), done);
        for name in [
            "stored.txt",
            "lvl9/noise",
            "dir/sub/x.js",
            "bin/run",
            "empty",
        ] {
            assert_eq!(
                fs::read(from_file.join(name)).unwrap(),
                fs::read(dest.join(name)).unwrap()
            );
        }
        // Truncated files are errors.
        for keep in [0, 10, archive.len() / 2, archive.len() - 1] {
            fs::write(&file, &archive[..keep]).unwrap();
            let into = from_file.join(format!("cut-{keep}"));
            fs::create_dir(&into).unwrap();
            assert!(unpack(&fs::File::open(&file).unwrap(), &into, &LIMITS).is_err());
        }
        let _ = fs::remove_file(&file);
        let _ = fs::remove_dir_all(&from_file);
        let _ = fs::remove_dir_all(&dest);
    }

    #[test]
    fn names_that_escape_or_are_invalid_are_refused() {
        for (name, why) in [
            ("../x", "escapes the package"),
            ("a/../../x", "escapes the package"),
            ("a/..", "escapes the package"),
            ("/etc/passwd", "absolute path"),
            ("a//b", "empty or"),
            ("./a", "empty or"),
            ("a\\b", "backslash"),
            ("a\nb", "control character"),
        ] {
            let err = check_name(name.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        }
        assert!(check_name(b"\xff\xfe").unwrap_err().contains("not UTF-8"));
        assert_eq!(check_name(b"a/b/").unwrap(), ("a/b".to_string(), true));
        assert_eq!(
            check_name(b"a.b/c..d").unwrap(),
            ("a.b/c..d".to_string(), false)
        );

        let archive: Vec<u8> =
            python_zip("z.writestr('ok.js', b'1')\nz.writestr('../../evil.js', b'x')");
        let dest = scratch("slip");
        let err = unpack(&archive, &dest, &LIMITS).unwrap_err();
        assert_eq!(err, "zip entry ../../evil.js escapes the package");
        assert!(
            !dest.join("ok.js").exists(),
            "nothing is written before the names are checked"
        );
        let _ = fs::remove_dir_all(&dest);
    }

    #[test]
    fn symlink_entries_are_refused() {
        let archive: Vec<u8> = python_zip(
            "i = zipfile.ZipInfo('link')\ni.create_system = 3\ni.external_attr = 0o120777 << 16\nz.writestr(i, b'/etc/passwd')",
        );
        let err = entries(&archive, &LIMITS).unwrap_err();
        assert_eq!(err, "zip entry link is a symlink");
    }

    #[test]
    fn a_bomb_is_stopped_by_the_bytes_it_inflates_to() {
        // 8 MiB of zeros deflate to a few KiB; the header's declared size is lied about too.
        let archive: Vec<u8> = python_zip(
            "z.writestr('zeros', b'\\0' * (8 << 20), compress_type=zipfile.ZIP_DEFLATED)",
        );
        assert!(archive.len() < 64 * 1024);
        let mut lying = archive.clone();
        let central = (0..lying.len() - 4)
            .rev()
            .find(|&i| u32_at(&lying, i) == Some(CENTRAL_SIGNATURE))
            .unwrap();
        lying[central + 24..central + 28].copy_from_slice(&10u32.to_le_bytes());
        let limits = ZipLimits {
            max_unpacked_bytes: 1 << 20,
            max_entries: 10,
        };
        for archive in [&archive, &lying] {
            let dest = scratch("bomb");
            let err = unpack(archive, &dest, &limits).unwrap_err();
            assert_eq!(
                err,
                "the archive unpacks to more than the limit of 1048576 bytes"
            );
            let _ = fs::remove_dir_all(&dest);
        }
        // Within a limit, the lie is caught by the real size.
        let dest = scratch("bomb-lie");
        let err = unpack(&lying, &dest, &LIMITS).unwrap_err();
        assert!(
            err.contains("unpacks to 8388608 bytes, its header says 10"),
            "{err}"
        );
        let _ = fs::remove_dir_all(&dest);
    }

    #[test]
    fn too_many_entries_are_refused() {
        let archive: Vec<u8> = python_zip("for i in range(11): z.writestr('f%d' % i, b'')");
        let limits = ZipLimits {
            max_unpacked_bytes: 1 << 20,
            max_entries: 10,
        };
        let err = entries(&archive, &limits).unwrap_err();
        assert_eq!(err, "the archive has 11 entries, more than the limit of 10");
        assert_eq!(entries(&archive, &LIMITS).unwrap().len(), 11);
    }

    #[test]
    fn unsupported_methods_and_garbage_are_clear_errors() {
        let archive =
            python_zip("z.writestr('a.txt', b'hello' * 100, compress_type=zipfile.ZIP_BZIP2)");
        let err = entries(&archive, &LIMITS).unwrap_err();
        assert!(err.contains("compression method 12"), "{err}");
        assert_eq!(
            entries(&b"hello"[..], &LIMITS).unwrap_err(),
            "not a zip archive (no end of central directory)"
        );
    }

    #[test]
    fn corrupt_and_truncated_archives_are_errors_never_panics() {
        let archive: Vec<u8> = python_zip(
            "z.writestr('a.js', b'exports.h = 1;\\n' * 50, compress_type=zipfile.ZIP_DEFLATED)\nz.writestr('b/', b'')\nz.writestr('b/c', b'xyz')",
        );
        let dest = scratch("fuzz");
        let mut rng = crate::rand::Rng::with_seed(11);
        for round in 0..3000 {
            let mut bytes = archive.clone();
            for _ in 0..=(rng.next_u64() % 3) {
                let at = (rng.next_u64() as usize) % bytes.len();
                bytes[at] = rng.next_u64() as u8;
            }
            if round % 3 == 0 {
                bytes.truncate((rng.next_u64() as usize) % bytes.len());
            }
            let into = dest.join(round.to_string());
            fs::create_dir(&into).unwrap();
            let _ = unpack(&bytes, &into, &LIMITS);
            let _ = fs::remove_dir_all(&into);
        }
        let _ = fs::remove_dir_all(&dest);
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        let mut crc = Crc32::new();
        crc.update(b"123456789");
        assert_eq!(crc.finish(), 0xcbf4_3926);
    }
}
