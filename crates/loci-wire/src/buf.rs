//! Bounds-checked cursor for decoding and a slice writer for encoding.
//!
//! Every read goes through [`Reader`], so no decoder can read past its buffer or panic on short
//! input: it gets a [`Error::Truncated`] that names the field and the offset instead.

use crate::error::{Error, Notes, Result};

/// A read cursor over one message. `base` is the offset of `buf[0]` in the outermost buffer so
/// errors from nested readers still point at the right byte.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    pub(crate) notes: Notes,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0, base: 0, notes: Notes::default() }
    }

    /// Offset of the cursor from the start of the outermost buffer.
    pub(crate) fn at(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The bytes not yet read, without consuming them.
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Truncated { what, at: self.at(), need: n - self.remaining() });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u128(&mut self, what: &'static str) -> Result<u128> {
        Ok(u128::from_be_bytes(self.array(what)?))
    }

    /// Splits off the next `n` bytes as a nested reader (an LCAF body, say). Notes seen in the
    /// nested reader must be merged back with [`Reader::absorb`].
    pub(crate) fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>> {
        let base = self.at();
        let buf = self.bytes(n, what)?;
        Ok(Reader { buf, pos: 0, base, notes: Notes::default() })
    }

    /// Merges the notes of a nested reader into this one.
    pub(crate) fn absorb(&mut self, inner: &Reader<'_>) {
        let n = &inner.notes;
        self.notes.reserved_bits |= n.reserved_bits;
        self.notes.nonce_and_version |= n.nonce_and_version;
        self.notes.echo_without_nonce |= n.echo_without_nonce;
    }

    /// Records that reserved bits were set when `value & mask != 0`.
    pub(crate) fn reserved(&mut self, value: u64, mask: u64) {
        if value & mask != 0 {
            self.notes.reserved_bits = true;
        }
    }

    /// Fails with [`Error::CountTooLarge`] when `count` items of at least `min_len` bytes each
    /// cannot fit in what is left. Called before any allocation sized by a count.
    pub(crate) fn check_count(&self, what: &'static str, count: usize, min_len: usize) -> Result<()> {
        if count.saturating_mul(min_len) > self.remaining() {
            return Err(Error::CountTooLarge { what, count, at: self.at(), remaining: self.remaining() });
        }
        Ok(())
    }

    /// Reads `count` items with `read`, after [`Reader::check_count`] has bounded `count` by what
    /// is left: one allocation of the exact size, no growth.
    pub(crate) fn list<T>(
        &mut self,
        what: &'static str,
        count: usize,
        min_len: usize,
        mut read: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.check_count(what, count, min_len)?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(read(self)?);
        }
        Ok(out)
    }

    /// Succeeds only if every byte was consumed.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes { len: self.remaining(), at: self.at() })
        }
    }
}

/// A write cursor over a buffer sized with `buffer_len()`. Writing past the end is a bug in
/// the caller (the buffer was not sized by `buffer_len`) and panics, as in smoltcp.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, data: &[u8]) {
        self.buf[self.pos..self.pos + data.len()].copy_from_slice(data);
        self.pos += data.len();
    }

    pub(crate) fn zeros(&mut self, n: usize) {
        self.buf[self.pos..self.pos + n].fill(0);
        self.pos += n;
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }

    pub(crate) fn u128(&mut self, v: u128) {
        self.bytes(&v.to_be_bytes());
    }

    /// Overwrites a big-endian u16 written earlier at `at` (for lengths known only afterwards).
    pub(crate) fn patch_u16(&mut self, at: usize, v: u16) {
        self.buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// Top-level encoding and decoding shared by every message `Repr`.
pub trait Wire: Sized {
    /// Decodes a whole buffer; trailing bytes are an error. Tolerated oddities are returned.
    fn parse_noting(buf: &[u8]) -> Result<(Self, Notes)>;

    /// Number of bytes [`Wire::emit`] writes.
    fn buffer_len(&self) -> usize;

    /// Encodes into `buf[..self.buffer_len()]`.
    ///
    /// # Panics
    /// When `buf` is shorter than `self.buffer_len()`.
    fn emit(&self, buf: &mut [u8]);

    /// Decodes a whole buffer; trailing bytes are an error.
    fn parse(buf: &[u8]) -> Result<Self> {
        Self::parse_noting(buf).map(|(v, _)| v)
    }

    /// Encodes into a new vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0; self.buffer_len()];
        self.emit(&mut out);
        out
    }
}

/// Implements [`Wire`] for a type with `read(&mut Reader)`, `write(&self, &mut Writer)` and
/// `wire_len(&self)` by requiring that the reader consumes the whole buffer.
macro_rules! impl_wire {
    ($t:ty) => {
        impl $crate::buf::Wire for $t {
            fn parse_noting(buf: &[u8]) -> $crate::error::Result<(Self, $crate::error::Notes)> {
                let mut r = $crate::buf::Reader::new(buf);
                let v = <$t>::read(&mut r)?;
                r.finish()?;
                Ok((v, r.notes))
            }
            fn buffer_len(&self) -> usize {
                self.wire_len()
            }
            fn emit(&self, buf: &mut [u8]) {
                let mut w = $crate::buf::Writer::new(buf);
                self.write(&mut w);
                debug_assert_eq!(w.pos(), self.wire_len());
            }
        }
    };
}
pub(crate) use impl_wire;
