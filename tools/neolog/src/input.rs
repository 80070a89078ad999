//! Opening a log file given on the command line: plain SQLite, or gzip, bzip2 or xz chosen
//! by the file's first bytes (not only its name), decompressed to a temporary file because
//! SQLite needs a real file.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use neo_logdb::LogReader;

/// A readable log, with the temporary copy that must live as long as the reader.
pub struct Input {
    pub reader: LogReader,
    /// The node name shown for records without one: the base name without extensions.
    pub default_name: String,
    _temporary: Option<tempfile::NamedTempFile>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Compression {
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// Opens `path`; problems that still leave something to read come back as warnings.
pub fn open(path: &Path, warnings: &mut Vec<String>) -> anyhow::Result<Input> {
    let shown = path.display();
    let mut file = File::open(path).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let mut magic = [0u8; 6];
    let read = read_up_to(&mut file, &mut magic)?;
    let compression = detect(&magic[..read]);
    let default_name = default_name(path);
    let (reader, temporary) = match compression {
        None => (LogReader::open(path)?, None),
        Some(Compression::Zstd) => {
            anyhow::bail!(
                "{shown}: zstd-compressed logs are not supported; decompress it with zstd -d first"
            )
        }
        Some(compression) => {
            let file = File::open(path).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
            let mut temporary = tempfile::NamedTempFile::new()?;
            let copied = decompress(compression, file, temporary.as_file_mut());
            temporary.as_file_mut().flush()?;
            if let Err((written, e)) = copied {
                repair_truncated_database(temporary.as_file_mut(), written)?;
                warnings.push(format!(
                    "{shown}: {compression:?} data is truncated or corrupt after {written} bytes ({e}); showing the readable part"
                ));
            }
            let reader = LogReader::open(temporary.path()).map_err(|e| {
                anyhow::anyhow!("{shown} (decompressed): {}", strip_path(&e.to_string()))
            })?;
            (reader, Some(temporary))
        }
    };
    Ok(Input {
        reader,
        default_name,
        _temporary: temporary,
    })
}

/// Makes a cut SQLite file readable up to where it was cut: SQLite refuses a file whose
/// header claims more pages than exist, so the last partial page is zero-filled and the
/// header's page count set to what is there. Later pages then read as corrupt, which the
/// reader reports after the records before them.
fn repair_truncated_database(file: &mut File, written: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut header = [0u8; 100];
    if written < header.len() as u64 {
        return Ok(());
    }
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut header)?;
    if !header.starts_with(b"SQLite format 3\0") {
        return Ok(());
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536u64,
        n if n >= 512 && n.is_power_of_two() => u64::from(n),
        _ => return Ok(()),
    };
    let pages = written.div_ceil(page_size);
    file.set_len(pages * page_size)?;
    let pages = u32::try_from(pages).unwrap_or(u32::MAX);
    file.seek(SeekFrom::Start(28))?;
    file.write_all(&pages.to_be_bytes())?;
    file.flush()
}

fn detect(magic: &[u8]) -> Option<Compression> {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if magic.starts_with(b"BZh") {
        Some(Compression::Bzip2)
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Compression::Xz)
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else {
        None
    }
}

/// Copies as much as can be decompressed; on failure, how much was written and why.
fn decompress(
    compression: Compression,
    file: File,
    out: &mut File,
) -> Result<u64, (u64, io::Error)> {
    let input = BufReader::with_capacity(1 << 16, file);
    let mut decoder: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(input)),
        Compression::Zstd => unreachable!("refused before decompressing"),
    };
    let mut buffer = vec![0u8; 1 << 16];
    let mut written = 0u64;
    loop {
        match decoder.read(&mut buffer) {
            Ok(0) => return Ok(written),
            Ok(n) => {
                out.write_all(&buffer[..n]).map_err(|e| (written, e))?;
                written += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
}

/// NEO/py's rule: drop a compression suffix, then the last extension.
fn default_name(path: &Path) -> String {
    let mut name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for suffix in [".gz", ".bz2", ".xz", ".zst"] {
        if let Some(stripped) = name.strip_suffix(suffix) {
            name = stripped.to_owned();
            break;
        }
    }
    match name.rsplit_once('.') {
        Some((stem, _)) => stem.to_owned(),
        None => name,
    }
}

fn read_up_to(file: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Reader errors name the temporary file; the user only knows the original one.
fn strip_path(message: &str) -> String {
    match message.split_once(": ") {
        Some((_, rest)) => rest.to_owned(),
        None => message.to_owned(),
    }
}
