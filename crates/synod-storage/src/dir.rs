//! The few filesystem operations storage needs, behind a trait, so that the simulator can run
//! the very same log and snapshot code on a simulated disk that loses unsynced writes, tears
//! the last write and flips bits.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};

/// One directory of files, named without paths, and of subdirectories.
///
/// Durability follows POSIX: data appended to a file survives a crash only once `sync` of
/// that file returned; a file's or a subdirectory's creation, a rename or a removal survives
/// only once `sync_dir` returned. A subdirectory that was not made durable may vanish at a
/// crash with everything in it, synced or not.
pub trait Dir: Sized {
    /// Names of the files in the directory, sorted.
    fn list(&self) -> Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&self, name: &str) -> Result<Vec<u8>>;
    /// A file's content as a stream, for files too large to hold twice.
    fn open_read(&self, name: &str) -> Result<Box<dyn Read + '_>>;
    /// A file's length in bytes.
    fn len(&self, name: &str) -> Result<u64>;
    /// Opens the subdirectory `name`, creating it if missing (durable at the next `sync_dir`).
    fn subdir(&mut self, name: &str) -> Result<Self>;
    /// Creates an empty file, replacing any file of that name.
    fn create(&mut self, name: &str) -> Result<()>;
    /// Appends bytes to a file.
    fn append(&mut self, name: &str, data: &[u8]) -> Result<()>;
    /// Writes bytes at `offset` of a file, over what is there, growing the file if they reach
    /// past its end. Durable, like an append, once `sync` returns.
    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<()>;
    /// Allocates a file's space up to `len` bytes before it is written, reading as zeros (the
    /// file's length becomes `len` if it was shorter; durable with the next `sync`). Writing
    /// into that space leaves the length as it is, so a `sync` after it has no file metadata
    /// to write, only data. Where the file system cannot allocate ahead, this does nothing.
    fn preallocate(&mut self, name: &str, len: u64) -> Result<()>;
    /// Makes a file's data durable (fdatasync).
    fn sync(&mut self, name: &str) -> Result<()>;
    /// Cuts a file to `len` bytes, durably: the cut, and everything written to the file before
    /// it, survive a crash once this returns.
    fn truncate(&mut self, name: &str, len: u64) -> Result<()>;
    /// Renames a file, replacing the target.
    fn rename(&mut self, from: &str, to: &str) -> Result<()>;
    /// Removes a file.
    fn remove(&mut self, name: &str) -> Result<()>;
    /// Makes creations, renames and removals durable (fsync of the directory).
    fn sync_dir(&mut self) -> Result<()>;
    /// A file's path, for messages.
    fn describe(&self, name: &str) -> String;
}

/// A real directory.
#[derive(Debug)]
pub struct RealDir {
    path: PathBuf,
    /// Files opened for writing, kept open between writes.
    open: HashMap<String, File>,
}

impl RealDir {
    /// The directory at `path`, created if missing. Every directory this creates is made
    /// durable in its parent before this returns, so a power loss cannot take it back; so is
    /// `path` itself, every time, in case an earlier start created it and stopped before that.
    pub fn open(path: impl Into<PathBuf>) -> Result<RealDir> {
        let path = path.into();
        let missing: Vec<PathBuf> = path
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty())
            .take_while(|p| !p.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(&path)
            .map_err(|e| StorageError::io("create directory", path.display().to_string(), e))?;
        // Outermost first: each new directory's entry lives in its parent.
        let mut synced = missing
            .iter()
            .rev()
            .map(PathBuf::as_path)
            .collect::<Vec<_>>();
        if missing.is_empty() {
            synced.push(&path);
        }
        for created in synced {
            match created.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => sync_directory(parent)?,
                _ => sync_directory(Path::new("."))?,
            }
        }
        Ok(RealDir::at(path))
    }

    /// An existing directory, opened for reading only: nothing is created.
    pub fn existing(path: impl Into<PathBuf>) -> Result<RealDir> {
        let path = path.into();
        if !path.is_dir() {
            let missing = std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such directory".to_string(),
            );
            return Err(StorageError::io(
                "open",
                path.display().to_string(),
                missing,
            ));
        }
        Ok(RealDir::at(path))
    }

    fn at(path: PathBuf) -> RealDir {
        RealDir {
            path,
            open: HashMap::new(),
        }
    }

    fn file_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn handle(&mut self, name: &str) -> Result<&mut File> {
        if !self.open.contains_key(name) {
            let path = self.file_path(name);
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| StorageError::io("open", path.display().to_string(), e))?;
            self.open.insert(name.to_string(), file);
        }
        Ok(self.open.get_mut(name).expect("inserted above"))
    }
}

/// Allocates the first `len` bytes of `file` (mode 0 of fallocate(2): the length grows to
/// `len`, new space reads as zeros). On a file system that cannot, or a disk without the
/// space, the file is left as it is and grows as it is written, as without this.
#[cfg(target_os = "linux")]
fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    use rustix::io::Errno;
    loop {
        return match fallocate(file, FallocateFlags::empty(), 0, len) {
            Err(Errno::INTR) => continue,
            // No space to allocate ahead: the file grows as it is written, as without this
            // (and a write that finds no space fails then, as it did before).
            Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::NOSPC) => Ok(()),
            other => other.map_err(std::io::Error::from),
        };
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(_file: &File, _len: u64) -> std::io::Result<()> {
    Ok(())
}

/// fsync of a directory: makes the names in it durable.
fn sync_directory(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync directory", path.display().to_string(), e))
}

impl Dir for RealDir {
    fn list(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.path)
            .map_err(|e| StorageError::io("list", self.path.display().to_string(), e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| StorageError::io("list", self.path.display().to_string(), e))?;
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.file_path(name);
        let mut data = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| StorageError::io("read", path.display().to_string(), e))?;
        Ok(data)
    }

    fn open_read(&self, name: &str) -> Result<Box<dyn Read + '_>> {
        let path = self.file_path(name);
        let file = File::open(&path)
            .map_err(|e| StorageError::io("open", path.display().to_string(), e))?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, file)))
    }

    fn len(&self, name: &str) -> Result<u64> {
        let path = self.file_path(name);
        std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| StorageError::io("stat", path.display().to_string(), e))
    }

    fn subdir(&mut self, name: &str) -> Result<RealDir> {
        let path = self.file_path(name);
        match std::fs::create_dir(&path) {
            Err(e) if !(e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir()) => Err(
                StorageError::io("create directory", path.display().to_string(), e),
            ),
            _ => Ok(RealDir::at(path)),
        }
    }

    fn create(&mut self, name: &str) -> Result<()> {
        self.open.remove(name);
        let path = self.file_path(name);
        File::create(&path)
            .map_err(|e| StorageError::io("create", path.display().to_string(), e))?;
        Ok(())
    }

    // The path for a message is made only on an error: these run on every log append.
    fn append(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let file = self.handle(name)?;
        let done = file
            .seek(SeekFrom::End(0))
            .and_then(|_| file.write_all(data));
        done.map_err(|e| StorageError::io("write", self.describe(name), e))
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<()> {
        let done = self.handle(name)?.write_all_at(data, offset);
        done.map_err(|e| StorageError::io("write", self.describe(name), e))
    }

    fn preallocate(&mut self, name: &str, len: u64) -> Result<()> {
        let done = allocate(self.handle(name)?, len);
        done.map_err(|e| StorageError::io("fallocate", self.describe(name), e))
    }

    fn sync(&mut self, name: &str) -> Result<()> {
        let done = self.handle(name)?.sync_data();
        done.map_err(|e| StorageError::io("fdatasync", self.describe(name), e))
    }

    fn truncate(&mut self, name: &str, len: u64) -> Result<()> {
        let path = self.describe(name);
        let file = self.handle(name)?;
        file.set_len(len)
            .and_then(|_| file.sync_all())
            .map_err(|e| StorageError::io("truncate", path, e))
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.open.remove(from);
        self.open.remove(to);
        std::fs::rename(self.file_path(from), self.file_path(to))
            .map_err(|e| StorageError::io("rename", self.describe(from), e))
    }

    fn remove(&mut self, name: &str) -> Result<()> {
        self.open.remove(name);
        std::fs::remove_file(self.file_path(name))
            .map_err(|e| StorageError::io("remove", self.describe(name), e))
    }

    fn sync_dir(&mut self) -> Result<()> {
        sync_directory(&self.path)
    }

    fn describe(&self, name: &str) -> String {
        self.file_path(name).display().to_string()
    }
}
