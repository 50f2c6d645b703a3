//! LEB128 varints and zigzag, the building blocks of every stored encoding.

/// Append `v` as an unsigned LEB128 varint.
#[inline]
pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Append `v` zigzag-encoded.
#[inline]
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Append a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over encoded bytes; every read fails cleanly on truncation.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Stored bytes did not decode: the data file is damaged or from a newer
/// version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

impl<'a> Reader<'a> {
    /// Start at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The bytes left to read (not consumed: `take` them).
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// How many bytes are left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// One byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, Corrupt> {
        let b = *self.buf.get(self.pos).ok_or(Corrupt)?;
        self.pos += 1;
        Ok(b)
    }

    /// An unsigned varint.
    #[inline]
    pub fn u64(&mut self) -> Result<u64, Corrupt> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(Corrupt);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(Corrupt);
            }
        }
    }

    /// A zigzag varint.
    #[inline]
    pub fn i64(&mut self) -> Result<i64, Corrupt> {
        let u = self.u64()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        let end = self.pos.checked_add(n).ok_or(Corrupt)?;
        let s = self.buf.get(self.pos..end).ok_or(Corrupt)?;
        self.pos = end;
        Ok(s)
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let n = usize::try_from(self.u64()?).map_err(|_| Corrupt)?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut out = Vec::new();
        let ints = [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN];
        for v in ints {
            put_i64(&mut out, v);
        }
        put_u64(&mut out, u64::MAX);
        put_bytes(&mut out, b"abc");
        let mut r = Reader::new(&out);
        for v in ints {
            assert_eq!(r.i64(), Ok(v));
        }
        assert_eq!(r.u64(), Ok(u64::MAX));
        assert_eq!(r.bytes(), Ok(&b"abc"[..]));
        assert!(r.is_empty());
        assert_eq!(r.u8(), Err(Corrupt));
    }

    #[test]
    fn hostile_bytes_fail_cleanly() {
        assert_eq!(Reader::new(&[0x80]).u64(), Err(Corrupt));
        assert_eq!(Reader::new(&[0xff; 11]).u64(), Err(Corrupt));
        assert_eq!(Reader::new(&[0x05, 1]).bytes(), Err(Corrupt));
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).u64(),
            Ok(u64::MAX)
        );
    }
}
