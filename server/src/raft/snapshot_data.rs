//! The snapshot bytes openraft moves around (its `SnapshotData`), without copying them for every use.
//!
//! The state machine sends its latest serialized snapshot to lagging followers (read from disk when a send needs
//! it, not kept resident). With `Cursor<Vec<u8>>` every send and every build cloned the whole snapshot.
//! [`SnapshotBytes`] instead *shares* the loaded bytes (an `Arc`) for reading: openraft reads chunks out of it and seeks, and any number of sends share
//! one copy. It is also what a follower receives into: writes go to an owned buffer, which the install then takes
//! over without a copy ([`SnapshotBytes::into_shared`]).
//!
//! Invariants: reads and seeks behave like `std::io::Cursor` (a position past the end reads nothing; seeking
//! before the start is an error); a write to shared bytes first makes them owned (copy on write), so the resident
//! snapshot is never modified through a handle given to openraft.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

#[derive(Debug)]
enum Buf {
    Shared(Arc<Vec<u8>>),
    Owned(Vec<u8>),
}

/// Snapshot bytes with a cursor position; see the module documentation.
#[derive(Debug)]
pub struct SnapshotBytes {
    buf: Buf,
    pos: u64,
}

impl SnapshotBytes {
    /// Shares `bytes` for reading.
    pub fn shared(bytes: Arc<Vec<u8>>) -> Self {
        Self { buf: Buf::Shared(bytes), pos: 0 }
    }

    /// An empty buffer to receive a snapshot into.
    pub fn empty() -> Self {
        Self { buf: Buf::Owned(Vec::new()), pos: 0 }
    }

    /// The bytes, shareable; no copy is made.
    pub fn into_shared(self) -> Arc<Vec<u8>> {
        match self.buf {
            Buf::Shared(b) => b,
            Buf::Owned(v) => Arc::new(v),
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.buf {
            Buf::Shared(b) => b,
            Buf::Owned(v) => v,
        }
    }

    fn owned(&mut self) -> &mut Vec<u8> {
        if let Buf::Shared(b) = &mut self.buf {
            let v = Arc::try_unwrap(std::mem::take(b)).unwrap_or_else(|b| b.as_ref().clone());
            self.buf = Buf::Owned(v);
        }
        match &mut self.buf {
            Buf::Owned(v) => v,
            Buf::Shared(_) => unreachable!("made owned above"),
        }
    }
}

impl AsyncRead for SnapshotBytes {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let bytes = me.bytes();
        let start = (me.pos as usize).min(bytes.len());
        let n = out.remaining().min(bytes.len() - start);
        out.put_slice(&bytes[start..start + n]);
        me.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for SnapshotBytes {
    fn start_seek(self: Pin<&mut Self>, to: io::SeekFrom) -> io::Result<()> {
        let me = self.get_mut();
        let (base, offset) = match to {
            io::SeekFrom::Start(n) => {
                me.pos = n;
                return Ok(());
            }
            io::SeekFrom::End(n) => (me.bytes().len() as u64, n),
            io::SeekFrom::Current(n) => (me.pos, n),
        };
        me.pos = base
            .checked_add_signed(offset)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek to a negative or overflowing position"))?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

impl AsyncWrite for SnapshotBytes {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let pos = usize::try_from(me.pos).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "position"))?;
        let v = me.owned();
        if v.len() < pos {
            v.resize(pos, 0);
        }
        let overlap = (v.len() - pos).min(data.len());
        v[pos..pos + overlap].copy_from_slice(&data[..overlap]);
        v.extend_from_slice(&data[overlap..]);
        me.pos += data.len() as u64;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn behaves_like_a_cursor_and_shares_without_copying() {
        let resident = Arc::new((0..=255u8).collect::<Vec<u8>>());
        let mut a = SnapshotBytes::shared(resident.clone());
        let mut chunk = [0u8; 10];
        a.seek(io::SeekFrom::Start(250)).await.unwrap();
        assert_eq!(a.read(&mut chunk).await.unwrap(), 6, "a short read at the end");
        assert_eq!(&chunk[..6], &[250, 251, 252, 253, 254, 255]);
        assert_eq!(a.read(&mut chunk).await.unwrap(), 0);
        assert_eq!(a.seek(io::SeekFrom::End(-6)).await.unwrap(), 250);
        assert!(a.seek(io::SeekFrom::Current(-1000)).await.is_err());
        assert!(Arc::ptr_eq(&a.into_shared(), &resident), "reading shares the resident bytes");

        // Writing to shared bytes copies them first: the resident snapshot is untouched.
        let mut b = SnapshotBytes::shared(resident.clone());
        b.seek(io::SeekFrom::Start(1)).await.unwrap();
        b.write_all(b"xy").await.unwrap();
        let written = b.into_shared();
        assert_eq!((written[0], written[1], written[2], written[3]), (0, b'x', b'y', 3));
        assert_eq!(resident[1], 1);

        // Receiving: chunks appended into an owned buffer, taken over without a copy.
        let mut r = SnapshotBytes::empty();
        r.write_all(b"hello ").await.unwrap();
        r.write_all(b"world").await.unwrap();
        assert_eq!(r.into_shared().as_slice(), b"hello world");
    }
}
