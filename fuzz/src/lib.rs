//! The properties the fuzz targets check, one function per target. The `cargo fuzz` targets in
//! `fuzz_targets/` call them on libFuzzer's inputs; `tests/fuzz_corpus.rs` in the main crate
//! includes this file and replays the seed corpora and the saved regressions through them, so
//! `cargo test` runs the same checks without libFuzzer.
//!
//! Inputs that must be split carry their split first: a few control bytes, then the bytes under
//! test. Every function panics when a property fails and accepts any input.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use noslate::admin_invocation::{self, Metadata};
use noslate::config::{
    self, MAX_NAME_CHARS, PROPORTION_SUM_TOLERANCE, ProfileSet, ServiceKind, SystemConfig,
};
use noslate::http::chunked::{Chunk, ChunkedDecoder, LAST_CHUNK, encode_chunk_header};
use noslate::http::request::{
    BodyKind, MAX_HEADERS_CAP, Parsed, RequestLimits, decode_path_segment, parse_request,
};
use noslate::http::{HeaderList, HttpError};
use noslate::inflate::InflateError;
use noslate::wire::{self, HEADER_LEN, Header, Kind, MAX_PAYLOAD, WireError};
use noslate::zip::{self, Unpacked, ZipLimits};

/// A target's check: panics when the input breaks a property.
pub type Check = fn(&[u8]);

/// Each target's name (its `fuzz_targets/` file and `corpus/` directory) and check.
pub const TARGETS: &[(&str, Check)] = &[
    ("request_head", request_head),
    ("chunked", chunked),
    ("wire_frames", wire_frames),
    ("config", config),
    ("inflate", inflate),
    ("zip", zip_archive),
    ("admin_metadata", admin_metadata),
];

/// Splits off the piece lengths at the front of `data`: one byte `n` (low 4 bits), then `n`
/// bytes, each the length of the next piece a reader gets. The rest of the input after those
/// pieces arrives as one last piece.
fn pieces(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let count = usize::from(count & 0x0f).min(rest.len());
    let (lens, input) = rest.split_at(count);
    (lens.iter().map(|&len| usize::from(len)).collect(), input)
}

/// Cuts `input` into the pieces `lens` asks for (clamped to what is left), then the rest.
fn cut<'a>(input: &'a [u8], lens: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(lens.len() + 1);
    let mut rest = input;
    for &len in lens {
        let (piece, tail) = rest.split_at(len.min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    out.push(rest);
    out
}

/// `request_head`: `[split lo, split hi, limits]` then the request bytes.
///
/// [`parse_request`] never panics; a complete head lies within the input and the head limit,
/// and parses the same on its own; and a prefix of the input (cut at the split) is either
/// `Partial` or parses exactly as the whole input does. Checked with the default limits and
/// with small ones taken from the `limits` byte.
pub fn request_head(data: &[u8]) {
    let (control, input) = data.split_at(data.len().min(3));
    let &[lo, hi, tight] = control else {
        return;
    };
    let split = usize::from(u16::from_le_bytes([lo, hi])) % (input.len() + 1);
    check_head(input, split, &RequestLimits::default());
    let small = RequestLimits {
        max_head_bytes: 16 + usize::from(tight) * 4,
        max_headers: usize::from(tight % 8),
        max_body_bytes: u64::from(tight),
    };
    check_head(input, split, &small);
}

fn check_head(input: &[u8], split: usize, limits: &RequestLimits) {
    let whole = parse_request(input, limits);
    if let Ok(Parsed::Complete { head, head_len }) = &whole {
        assert!(*head_len > 0, "empty complete head");
        assert!(
            *head_len <= input.len(),
            "head_len {head_len} past the input"
        );
        assert!(*head_len <= limits.max_head_bytes, "head over the limit");
        let cap = limits.max_headers.min(MAX_HEADERS_CAP);
        assert!(head.headers.len() <= cap, "more headers than allowed");
        match head.body {
            BodyKind::Length(len) => {
                assert!(len > 0 && len <= limits.max_body_bytes, "body length {len}");
            }
            BodyKind::None => assert!(!head.expect_continue, "100-continue without a body"),
            BodyKind::Chunked => {}
        }
        assert!(!head.expect_continue || head.minor_version >= 1);
        // A path's last segment as a name (how `/invoke/NAME` is read): never empty, never two
        // segments, whatever the escapes.
        let last = head.path().rsplit('/').next().unwrap_or_default();
        if let Some(name) = decode_path_segment(last) {
            assert!(
                !name.is_empty() && !name.contains('/'),
                "name {name:?} from {last:?}"
            );
            if !last.contains('%') {
                assert_eq!(name, last, "a segment without escapes is its own name");
            }
        }
        let alone = parse_request(&input[..*head_len], limits);
        assert_eq!(alone, whole, "the head alone parses differently");
    }
    let prefix = parse_request(&input[..split], limits);
    if prefix != Ok(Parsed::Partial) {
        assert_eq!(prefix, whole, "the first {split} bytes parse differently");
    }
}

/// The bodies of [`chunked`]'s `max` byte.
const MAX_BODIES: [u64; 8] = [0, 1, 5, 16, 100, 4096, 1 << 20, u64::MAX];

/// `chunked`: `[max]`, then [`pieces`], then the body bytes.
///
/// [`ChunkedDecoder`] never panics; it decodes the same data, consumes the same bytes and ends
/// the same way whether the input arrives whole, a byte at a time or in the chosen pieces; data
/// stays within the body limit, every step consumes at most what it was given, and a body it
/// accepted decodes again from its own chunked encoding.
pub fn chunked(data: &[u8]) {
    let Some((&max, rest)) = data.split_first() else {
        return;
    };
    let max = MAX_BODIES[usize::from(max & 7)];
    let (lens, input) = pieces(rest);
    let whole = feed_chunked(&[input], max);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(feed_chunked(&bytes, max), whole, "a byte at a time");
    assert_eq!(
        feed_chunked(&cut(input, &lens), max),
        whole,
        "in pieces {lens:?}"
    );
    if whole.end == ChunkedEnd::Done && !whole.body.is_empty() {
        let mut encoded = Vec::new();
        encode_chunk_header(whole.body.len(), &mut encoded);
        encoded.extend_from_slice(&whole.body);
        encoded.extend_from_slice(b"\r\n");
        encoded.extend_from_slice(LAST_CHUNK);
        let again = feed_chunked(&[&encoded], max);
        assert_eq!(again.body, whole.body, "re-encoded body");
        assert_eq!(again.consumed, encoded.len());
    }
}

/// How feeding a chunked body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChunkedEnd {
    /// The decoder reached the end of the body.
    Done,
    /// The input ran out first.
    NeedMore,
    /// The decoder refused the input.
    Error(HttpError),
}

/// What feeding a chunked body produced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChunkedRun {
    body: Vec<u8>,
    /// Bytes the decoder consumed in all.
    consumed: usize,
    end: ChunkedEnd,
}

/// Feeds `pieces` to a decoder as a connection does: the unconsumed rest stays buffered and the
/// next piece is appended when the decoder needs more.
fn feed_chunked(pieces: &[&[u8]], max: u64) -> ChunkedRun {
    let offered: usize = pieces.iter().map(|piece| piece.len()).sum();
    let mut decoder = ChunkedDecoder::new(max);
    let mut pending: Vec<u8> = Vec::new();
    let mut next = pieces.iter();
    let mut run = ChunkedRun {
        body: Vec::new(),
        consumed: 0,
        end: ChunkedEnd::NeedMore,
    };
    loop {
        let (consumed, chunk) = match decoder.decode(&pending) {
            Ok(step) => step,
            Err(err) => {
                // Where an error stops depends on how far earlier calls had read, and the
                // connection is closed anyway: only the error itself must match.
                run.consumed = 0;
                run.end = ChunkedEnd::Error(err);
                return run;
            }
        };
        assert!(consumed <= pending.len(), "consumed more than given");
        run.consumed += consumed;
        assert!(run.consumed <= offered);
        match chunk {
            Chunk::Data(data) => {
                assert!(!data.is_empty(), "empty data step");
                let at = consumed - data.len();
                assert!(
                    std::ptr::eq(data, &pending[at..consumed]),
                    "data not the input"
                );
                run.body.extend_from_slice(data);
                assert!(run.body.len() as u64 <= max, "body over the limit");
                assert_eq!(decoder.body_bytes(), run.body.len() as u64);
            }
            Chunk::Done => {
                assert_eq!(decoder.body_bytes(), run.body.len() as u64);
                assert_eq!(decoder.decode(b"0\r\n\r\n"), Ok((0, Chunk::Done)));
                run.end = ChunkedEnd::Done;
                return run;
            }
            Chunk::NeedMore => {
                assert_eq!(consumed, pending.len(), "NeedMore left input unconsumed");
                pending.clear();
                match next.next() {
                    Some(piece) => pending.extend_from_slice(piece),
                    None => return run,
                }
                continue;
            }
        }
        pending.drain(..consumed);
    }
}

/// `wire_frames`: [`pieces`], then a byte stream from a worker.
///
/// Reading frames with [`wire::decode_header`] never panics and yields the same frames and the
/// same end whether the stream arrives whole, a byte at a time or in the chosen pieces; every
/// frame decoded encodes back to its exact bytes with [`wire::put_frame`] and decodes again to
/// the same header.
pub fn wire_frames(data: &[u8]) {
    let (lens, input) = pieces(data);
    let whole = read_frames(&[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(read_frames(&bytes), whole, "a byte at a time");
    assert_eq!(read_frames(&cut(input, &lens)), whole, "in pieces {lens:?}");

    let mut at = 0;
    for (header, payload) in &whole.frames {
        assert!(header.len <= MAX_PAYLOAD && header.len == payload.len());
        let mut encoded = Vec::new();
        wire::put_frame(
            &mut encoded,
            header.kind,
            header.flags,
            header.stream,
            payload,
        );
        let original = &input[at..at + HEADER_LEN + payload.len()];
        assert_eq!(encoded, original, "re-encoded frame differs");
        assert_eq!(wire::decode_header(&encoded), Ok(Some(*header)));
        at += encoded.len();
        if header.kind == Kind::WindowToRuntime {
            match wire::window_credit(payload) {
                Ok(credit) => assert_eq!(credit.to_le_bytes(), payload.as_slice()),
                Err(err) => assert_eq!(err, WireError::BadWindow(payload.len())),
            }
        }
    }
    assert_eq!(at, whole.consumed);
}

/// The frames read from a stream and how reading ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FrameRun {
    frames: Vec<(Header, Vec<u8>)>,
    /// Bytes of the stream taken by those frames.
    consumed: usize,
    /// What broke the protocol at `consumed`, if anything did.
    error: Option<WireError>,
}

/// Reads frames the way the runtime reads a worker's pipe: buffer what arrived, take every
/// complete frame, stop at the first protocol error.
fn read_frames(pieces: &[&[u8]]) -> FrameRun {
    let mut buf: Vec<u8> = Vec::new();
    let mut run = FrameRun {
        frames: Vec::new(),
        consumed: 0,
        error: None,
    };
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let header = match wire::decode_header(&buf) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(err) => {
                    assert!(buf.len() >= HEADER_LEN, "error before a whole header");
                    run.error = Some(err);
                    return run;
                }
            };
            assert!(header.len <= MAX_PAYLOAD, "payload over the limit");
            let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + header.len) else {
                break;
            };
            run.frames.push((header, payload.to_vec()));
            run.consumed += HEADER_LEN + header.len;
            buf.drain(..HEADER_LEN + header.len);
        }
    }
    run
}

/// `config`: a JSON document, optionally followed by a NUL byte and environment variables as
/// `NAME=value` lines.
///
/// The system configuration and the profile set parse from the document (the profiles under
/// the default system configuration and under the parsed one) without panicking; a rejection
/// lists at least one problem, each with a path and a reason; an accepted configuration keeps
/// the invariants its validation promises.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (json, env_lines) = text.split_once('\0').unwrap_or((&text, ""));
    let env_vars: Vec<(&str, &str)> = env_lines
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let env = |name: &str| {
        env_vars
            .iter()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| (*value).to_owned())
    };
    let sys = config::parse_system_config(json, &env);
    match &sys {
        Ok(sys) => check_system(sys),
        Err(problems) => check_problems(problems),
    }
    let base = Path::new("/srv/functions");
    let defaults = SystemConfig::default();
    for sys in [Some(&defaults), sys.as_ref().ok()].into_iter().flatten() {
        match config::parse_functions(json, base, sys) {
            Ok(set) => check_profiles(&set),
            Err(problems) => check_problems(&problems),
        }
    }
    let _ = config::parse_byte_size(json);
}

fn check_problems(problems: &[config::Problem]) {
    assert!(!problems.is_empty(), "rejected without a problem");
    for problem in problems {
        assert!(
            !problem.path.is_empty(),
            "problem without a path: {problem}"
        );
        assert!(
            !problem.reason.is_empty(),
            "problem without a reason: {problem}"
        );
    }
}

fn check_system(sys: &SystemConfig) {
    let worker = &sys.worker;
    assert!(worker.reservation_count_per_function <= worker.replica_count_limit);
    let ema = &worker.ema;
    assert!(ema.concurrency_shrink_threshold < ema.concurrency_expand_threshold);
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name != "."
        && name != ".."
}

fn check_profiles(set: &ProfileSet) {
    for (i, function) in set.functions.iter().enumerate() {
        assert!(
            valid_name(&function.name),
            "function name {:?}",
            function.name
        );
        assert!(
            set.functions[..i].iter().all(|f| f.name != function.name),
            "function {:?} twice",
            function.name
        );
    }
    for (i, service) in set.services.iter().enumerate() {
        assert!(valid_name(&service.name), "service name {:?}", service.name);
        assert!(
            set.services[..i].iter().all(|s| s.name != service.name),
            "service {:?} twice",
            service.name
        );
        match &service.kind {
            ServiceKind::Default { function } => {
                assert!(
                    set.function(function).is_some(),
                    "unknown target {function:?}"
                );
            }
            ServiceKind::Proportional(targets) => {
                assert!(
                    !targets.is_empty(),
                    "service {:?} without targets",
                    service.name
                );
                let mut sum = 0.0;
                for (function, proportion) in targets {
                    assert!(
                        set.function(function).is_some(),
                        "unknown target {function:?}"
                    );
                    assert!(*proportion > 0.0 && *proportion <= 1.0, "{proportion}");
                    sum += proportion;
                }
                assert!((sum - 1.0).abs() <= PROPORTION_SUM_TOLERANCE, "sum {sum}");
                assert!(service.select(0.0).is_some() && service.select(0.999_999).is_some());
            }
        }
    }
}

/// A reader that hands out its input in the given pieces (and the rest as one last piece),
/// however large the buffer it is asked to fill: a socket or a pipe that splits its data.
struct PieceReader<'a> {
    pieces: Vec<&'a [u8]>,
    next: usize,
}

impl<'a> PieceReader<'a> {
    fn new(pieces: Vec<&'a [u8]>) -> Self {
        PieceReader { pieces, next: 0 }
    }
}

impl Read for PieceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(piece) = self.pieces.get_mut(self.next) {
            if piece.is_empty() {
                self.next += 1;
                continue;
            }
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            *piece = &piece[n..];
            return Ok(n);
        }
        Ok(0)
    }
}

/// The output limits [`inflate`]'s `limit` byte picks from.
const INFLATE_LIMITS: [u64; 8] = [0, 1, 7, 100, 4096, 65_535, 65_536, 1 << 20];

/// The most a stream may inflate to in the unlimited runs: far beyond what libFuzzer's inputs
/// reach except as bombs, which are then only checked against the limits.
pub const INFLATE_CEILING: u64 = 64 << 20;

/// What inflating one stream produced: the result and every byte the sink was handed.
pub type InflateRun = (Result<u64, InflateError>, Vec<u8>);

/// Inflates what `input` reads, at most `max_out` bytes, collecting the sink's pieces.
pub fn inflate_run(input: &mut dyn Read, max_out: u64) -> InflateRun {
    let mut out = Vec::new();
    let result = noslate::inflate::inflate(input, max_out, &mut |piece: &[u8]| {
        out.extend_from_slice(piece);
        Ok(())
    });
    (result, out)
}

/// [`inflate`]'s input taken apart: the `limit` byte, the piece lengths and the stream.
pub fn inflate_input(data: &[u8]) -> Option<(u8, Vec<usize>, &[u8])> {
    let (&limit, rest) = data.split_first()?;
    let (lens, stream) = pieces(rest);
    Some((limit, lens, stream))
}

/// `inflate`: `[limit]`, then [`pieces`], then a raw DEFLATE stream.
///
/// [`noslate::inflate::inflate`] never panics; it produces the same output and the same end
/// whether its reader returns the stream whole, a byte at a time or in the chosen pieces; a
/// success reports exactly the bytes its sink got. Under a limit the sink never gets more than
/// the limit, what it gets is a prefix of the unlimited output, and the run ends as the
/// unlimited one did if that fits, else with `TooLarge`.
pub fn inflate(data: &[u8]) {
    let Some((limit, lens, stream)) = inflate_input(data) else {
        return;
    };
    let whole = inflate_run(&mut &stream[..], INFLATE_CEILING);
    if let (Ok(n), out) = &whole {
        assert_eq!(*n, out.len() as u64, "reported length");
    }
    let bytes = stream.chunks(1).collect();
    for split in [cut(stream, &lens), bytes] {
        let run = inflate_run(&mut PieceReader::new(split), INFLATE_CEILING);
        assert_eq!(run, whole, "split input inflates differently");
    }
    if matches!(whole.0, Err(InflateError::TooLarge(_))) {
        return;
    }
    let max = INFLATE_LIMITS[usize::from(limit) % INFLATE_LIMITS.len()];
    let (result, out) = inflate_run(&mut &stream[..], max);
    assert!(
        out.len() as u64 <= max,
        "{} bytes past the limit {max}",
        out.len()
    );
    assert!(whole.1.starts_with(&out), "limited output is not a prefix");
    let fits = whole.1.len() as u64 <= max;
    match (&whole.0, &result) {
        (Ok(_), _) if fits => assert_eq!((&result, &out), (&whole.0, &whole.1)),
        (Err(e), r) if fits => assert!(
            r.as_ref().err() == Some(e) || r == &Err(InflateError::TooLarge(max)),
            "unlimited {e:?}, limited {r:?}"
        ),
        (Ok(_), r) => assert_eq!(r, &Err(InflateError::TooLarge(max))),
        (Err(e), r) => assert!(
            r.as_ref().err() == Some(e) || r == &Err(InflateError::TooLarge(max)),
            "unlimited {e:?}, limited {r:?}"
        ),
    }
}

/// The limits [`zip_archive`]'s `limits` byte picks from: (unpacked bytes, entries).
const ZIP_LIMITS: [(u64, u32); 4] = [(1 << 20, 64), (100, 64), (1 << 20, 2), (0, 64)];

/// `zip`: `[limits]`, then a zip archive. With the `limits` byte's high bit set, every entry's
/// CRC-32 and size in the central directory are first made to match its data (when that
/// inflates), so that mutated archives get past the checksum and exercise the success path.
///
/// Reading the central directory never panics, and every entry it lists has a checked,
/// relative, unique name. Unpacking (from memory, and from a file read piece by piece, which
/// must end alike) never panics and never writes outside its directory; a success wrote
/// exactly the files and bytes it reports, within the limits, and nothing but regular files
/// and directories.
pub fn zip_archive(data: &[u8]) {
    let Some((&pick, archive)) = data.split_first() else {
        return;
    };
    let repaired;
    let archive = if pick & 0x80 != 0 {
        repaired = with_matching_checksums(archive);
        &repaired[..]
    } else {
        archive
    };
    let (max_unpacked_bytes, max_entries) = ZIP_LIMITS[usize::from(pick) % ZIP_LIMITS.len()];
    let limits = ZipLimits {
        max_unpacked_bytes,
        max_entries,
    };
    if let Ok(list) = zip::entries(archive, &limits) {
        assert!(list.len() <= max_entries as usize, "{} entries", list.len());
        for (i, entry) in list.iter().enumerate() {
            let (name, _) = zip::check_name(entry.name.as_bytes()).expect("listed name checks");
            assert_eq!(name, entry.name);
            assert!(list[..i].iter().all(|e| e.name != entry.name), "repeated");
        }
    }
    let scratch = Scratch::new();
    let from_memory = scratch.dir("memory");
    let in_memory = zip::unpack(archive, &from_memory, &limits);
    let file_path = scratch.root.join("archive.zip");
    fs::write(&file_path, archive).expect("write the archive");
    let file = fs::File::open(&file_path).expect("open the archive");
    let from_file = scratch.dir("file");
    let in_file = zip::unpack(&file, &from_file, &limits);
    assert_eq!(
        in_memory.as_ref().map_err(|_| ()),
        in_file.as_ref().map_err(|_| ()),
        "memory {in_memory:?}, file {in_file:?}"
    );
    let mut names: Vec<_> = fs::read_dir(&scratch.root)
        .expect("read the scratch directory")
        .map(|e| e.expect("scratch entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["archive.zip", "file", "memory"],
        "wrote outside its directory"
    );
    if let Ok(done) = in_memory {
        assert!(done.bytes <= max_unpacked_bytes, "{} bytes", done.bytes);
        assert!(done.files <= max_entries, "{} files", done.files);
        let on_disk = tree(&from_memory);
        assert_eq!(on_disk, tree(&from_file), "the two unpackings differ");
        let files = on_disk.iter().filter(|(_, bytes)| bytes.is_some()).count();
        let bytes: u64 = on_disk.iter().filter_map(|(_, bytes)| *bytes).sum();
        assert_eq!(
            Unpacked {
                files: files as u32,
                bytes
            },
            done
        );
    }
}

/// A directory of its own for one run, removed when dropped.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        // Replays run on several test threads of one process.
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let root =
            std::env::temp_dir().join(format!("noslate-fuzz-zip-{}-{run}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("create the scratch directory");
        Scratch { root }
    }

    /// A new empty directory `name` inside the scratch directory.
    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        fs::create_dir(&dir).expect("create an unpack directory");
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Every path under `dir` (relative, sorted) with its length for a file and `None` for a
/// directory; panics on anything else (a symlink, a device).
fn tree(dir: &Path) -> Vec<(PathBuf, Option<u64>)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        for entry in fs::read_dir(&at).expect("read an unpacked directory") {
            let entry = entry.expect("unpacked entry");
            let kind = fs::symlink_metadata(entry.path()).expect("stat an unpacked entry");
            let relative = entry
                .path()
                .strip_prefix(dir)
                .expect("inside")
                .to_path_buf();
            if kind.is_dir() {
                found.push((relative, None));
                todo.push(entry.path());
            } else {
                assert!(
                    kind.is_file(),
                    "{} is neither file nor directory",
                    relative.display()
                );
                found.push((relative, Some(kind.len())));
            }
        }
    }
    found.sort();
    found
}

/// `admin_metadata`: an admin invocation's header fields, one `name:value` per line (the
/// value's bytes as ISO-8859-1, as the HTTP parser hands them on).
///
/// [`Metadata::parse`] never panics; what it accepts is what the function may be given: a
/// method that is a token, a url without spaces or control bytes, header and baggage names
/// that are not empty, no line break and no char past U+00FF in any pair (values stand for
/// bytes), and a request id of 1 to 128 visible ASCII characters. Accepted pairs encode with
/// [`admin_invocation::encode_pairs`] into a value that parses back to the same pairs.
pub fn admin_metadata(data: &[u8]) {
    let mut headers = HeaderList::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]);
        headers.push_latin1(&name, &line[colon + 1..]);
    }
    let Ok(meta) = Metadata::parse(&headers, 1_700_000_000_000) else {
        return;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    assert!(token(&meta.method), "method {:?}", meta.method);
    assert!(
        !meta.url.is_empty() && meta.url.bytes().all(|b| b > b' ' && b != 0x7f),
        "url {:?}",
        meta.url
    );
    if let Some(id) = &meta.request_id {
        assert!(
            (1..=admin_invocation::MAX_REQUEST_ID_LEN).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_graphic()),
            "request id {id:?}"
        );
    }
    let sendable = |s: &str| s.chars().all(|c| c <= '\u{ff}' && c != '\r' && c != '\n');
    let from_json = headers.get(admin_invocation::HEADERS).is_some();
    let pairs = meta.headers.to_pairs();
    let lists = [
        (admin_invocation::HEADERS, Some(pairs).filter(|_| from_json)),
        (admin_invocation::BAGGAGE, meta.baggage.clone()),
    ];
    for (header, list) in lists {
        let Some(list) = list else { continue };
        for (name, value) in &list {
            assert!(!name.is_empty(), "{header}: an empty name");
            assert!(
                sendable(name) && sendable(value),
                "{header}: {name:?}: {value:?}"
            );
        }
        let mut again = HeaderList::new();
        again.push(header, &admin_invocation::encode_pairs(&list));
        let reparsed = Metadata::parse(&again, 1_700_000_000_000)
            .unwrap_or_else(|e| panic!("{header}: its own encoding is refused: {e}"));
        let back = if header == admin_invocation::HEADERS {
            reparsed.headers.to_pairs()
        } else {
            reparsed.baggage.unwrap_or_default()
        };
        assert_eq!(back, list, "{header}: the encoding does not parse back");
    }
}

/// `archive` with each central directory entry's CRC-32 and uncompressed size set to those of
/// its data, for the entries whose data can be found and inflated (within 1 MiB); everything
/// else is left as it is. Reads the layout with its own few lines, independent of `zip`.
fn with_matching_checksums(archive: &[u8]) -> Vec<u8> {
    let mut out = archive.to_vec();
    let u16_at = |at: usize| {
        archive
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        archive
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let Some(eocd) = (0..archive.len().saturating_sub(21))
        .rev()
        .find(|&at| u32_at(at) == Some(0x0605_4b50))
    else {
        return out;
    };
    let (Some(count), Some(at)) = (u16_at(eocd + 10), u32_at(eocd + 16)) else {
        return out;
    };
    let mut at = at as usize;
    for _ in 0..count {
        if u32_at(at) != Some(0x0201_4b50) {
            break;
        }
        let fields = (
            u16_at(at + 10),
            u32_at(at + 20),
            u16_at(at + 28),
            u16_at(at + 30),
            u16_at(at + 32),
            u32_at(at + 42),
        );
        let (Some(method), Some(compressed), Some(name), Some(extra), Some(comment), Some(local)) =
            fields
        else {
            break;
        };
        let local = local as usize;
        let data_at = match (u16_at(local + 26), u16_at(local + 28)) {
            (Some(n), Some(e)) => local + 30 + usize::from(n) + usize::from(e),
            _ => usize::MAX,
        };
        let data = data_at
            .checked_add(compressed as usize)
            .and_then(|end| archive.get(data_at..end));
        let plain = match (method, data) {
            (0, Some(data)) => Some(data.to_vec()),
            (8, Some(data)) => match inflate_run(&mut &data[..], 1 << 20) {
                (Ok(_), plain) => Some(plain),
                _ => None,
            },
            _ => None,
        };
        if let Some(plain) = plain {
            out[at + 16..at + 20].copy_from_slice(&crc32(&plain).to_le_bytes());
            out[at + 24..at + 28].copy_from_slice(&(plain.len() as u32).to_le_bytes());
        }
        at += 46 + usize::from(name) + usize::from(extra) + usize::from(comment);
    }
    out
}

/// CRC-32 as zip uses it, bit by bit (the fuzz targets' own, not the runtime's).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                0xedb8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    crc ^ 0xffff_ffff
}
