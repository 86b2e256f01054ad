//! A response journal: which response each scoped idempotency key was given, on disk.
//!
//! A sampling scope's derived key lets a restarted run ask Sail for the stored response
//! instead of paying again, but only while the create body is byte-identical: a resumed
//! training run exports its weights again (a new checkpoint path, a new signature), so Sail
//! answers the old key with 400 `idempotency_error`. The journal keeps `key -> response id`
//! for such scopes; a rerun that finds its key here polls that response instead of creating.
//!
//! Format: one `<key>\t<response id>\n` line per accepted create, appended (`O_APPEND`, one
//! write per line, so processes sharing a journal never interleave within a line); the last
//! line of a key wins. A torn last line (a crash mid-write) is ignored. Response ids are not
//! secrets; keys are digests. Lines are written without fsync: a killed process loses
//! nothing the kernel has, a machine crash may lose the tail (those samples are created again).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    entries: Mutex<HashMap<String, String>>,
}

impl Journal {
    /// Open (creating it if needed) the journal at `path` and read what earlier runs recorded.
    pub fn open(path: &Path) -> std::io::Result<Journal> {
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        if text.last().is_some_and(|&b| b != b'\n') {
            // End a torn last line, so the next record starts a line of its own.
            file.write_all(b"\n")?;
        }
        Ok(Journal { path: path.to_owned(), file: Mutex::new(file), entries: Mutex::new(parse(&text)) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The response recorded for `key`, if any.
    pub fn lookup(&self, key: &str) -> Option<String> {
        self.entries.lock().get(key).cloned()
    }

    /// Record that `key`'s sample is the response `id` (it replaces an earlier record).
    /// Keys and ids that would break the line format are refused.
    pub fn record(&self, key: &str, id: &str) -> std::io::Result<()> {
        if !is_field(key) || !is_field(id) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "key or response id not journalable"));
        }
        let line = format!("{key}\t{id}\n");
        self.file.lock().write_all(line.as_bytes())?;
        self.entries.lock().insert(key.to_owned(), id.to_owned());
        Ok(())
    }
}

fn is_field(s: &str) -> bool {
    !s.is_empty() && !s.contains(['\t', '\n', '\r'])
}

/// The records of a journal's text: the last complete, well-formed line of each key wins.
fn parse(text: &[u8]) -> HashMap<String, String> {
    let mut entries = HashMap::new();
    // Everything after the last newline is a torn write.
    let complete = match text.iter().rposition(|&b| b == b'\n') {
        Some(end) => &text[..end],
        None => return entries,
    };
    for line in complete.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else { continue };
        let mut fields = line.split('\t');
        if let (Some(key), Some(id), None) = (fields.next(), fields.next(), fields.next()) {
            if is_field(key) && is_field(id) {
                entries.insert(key.to_owned(), id.to_owned());
            }
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sail-lite-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        dir
    }

    #[test]
    fn records_survive_reopening_and_the_last_one_wins() {
        let path = temp_path("reopen");
        let j = Journal::open(&path).unwrap();
        assert!(j.is_empty());
        j.record("k1", "resp_a").unwrap();
        j.record("k2", "resp_b").unwrap();
        j.record("k1", "resp_c").unwrap();
        assert_eq!(j.lookup("k1").as_deref(), Some("resp_c"));
        drop(j);
        let again = Journal::open(&path).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again.lookup("k1").as_deref(), Some("resp_c"));
        assert_eq!(again.lookup("k2").as_deref(), Some("resp_b"));
        assert_eq!(again.lookup("k3"), None);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn torn_and_malformed_lines_are_ignored() {
        let parsed = parse(b"a\t1\nbroken line\nb\t2\textra\n\xff\t3\nc\t\nd\t4\ne\t5");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed.get("a").map(String::as_str), Some("1"));
        assert_eq!(parsed.get("d").map(String::as_str), Some("4"));
        assert!(parse(b"").is_empty());
        assert!(parse(b"torn\tline").is_empty());
    }

    #[test]
    fn a_torn_last_line_is_ended_before_the_next_record() {
        let path = temp_path("torn");
        std::fs::write(&path, b"a\t1\nb\tresp_to").unwrap();
        let j = Journal::open(&path).unwrap();
        assert_eq!((j.len(), j.lookup("b")), (1, None));
        j.record("c", "3").unwrap();
        drop(j);
        let again = Journal::open(&path).unwrap();
        assert_eq!(again.lookup("c").as_deref(), Some("3"));
        assert_eq!(again.lookup("a").as_deref(), Some("1"));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn fields_that_would_break_a_line_are_refused() {
        let path = temp_path("refuse");
        let j = Journal::open(&path).unwrap();
        assert!(j.record("k", "a\nb").is_err());
        assert!(j.record("k\tx", "id").is_err());
        assert!(j.record("", "id").is_err());
        assert!(j.is_empty());
        std::fs::remove_file(&path).unwrap();
    }
}
