//! `HeaderText`: a decoded header name or value. Most are short (`destination`,
//! `/queue/orders`, `content-length`, an ack id), so up to [`INLINE_MAX`] bytes live inline and
//! only longer text goes to the heap. Decoding a frame used to allocate two `String`s per
//! header; on a 1 → 1 STOMP run that was most of the broker's allocations.

use std::fmt;
use std::ops::Deref;

/// Longest text kept inline.
pub const INLINE_MAX: usize = 22;

/// See the module docs.
#[derive(Clone)]
pub struct HeaderText(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE_MAX] },
    Heap(String),
}

impl HeaderText {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // SAFETY: `Repr::Inline` is only built by `From<&str>`, which copies the `len`
            // bytes of a `&str` (valid UTF-8) and nothing else; the fields are private and never
            // changed afterwards. Checking again here cost a UTF-8 scan per header comparison.
            Repr::Inline { len, bytes } => unsafe { std::str::from_utf8_unchecked(&bytes[..usize::from(*len)]) },
            Repr::Heap(text) => text,
        }
    }

    /// The text as a `String` (allocates only for inline text).
    pub fn into_string(self) -> String {
        match self.0 {
            Repr::Heap(text) => text,
            Repr::Inline { .. } => self.as_str().to_owned(),
        }
    }
}

impl From<&str> for HeaderText {
    fn from(text: &str) -> Self {
        if text.len() <= INLINE_MAX {
            let mut bytes = [0u8; INLINE_MAX];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            HeaderText(Repr::Inline { len: text.len() as u8, bytes })
        } else {
            HeaderText(Repr::Heap(text.to_owned()))
        }
    }
}

impl From<String> for HeaderText {
    fn from(text: String) -> Self {
        if text.len() <= INLINE_MAX { HeaderText::from(text.as_str()) } else { HeaderText(Repr::Heap(text)) }
    }
}

impl From<&String> for HeaderText {
    fn from(text: &String) -> Self {
        HeaderText::from(text.as_str())
    }
}

impl From<HeaderText> for String {
    fn from(text: HeaderText) -> Self {
        text.into_string()
    }
}

impl Deref for HeaderText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for HeaderText {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for HeaderText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for HeaderText {}

impl PartialEq<str> for HeaderText {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for HeaderText {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for HeaderText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for HeaderText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_inline_long_text_on_the_heap_and_both_read_back() {
        for text in ["", "id", "/queue/orders", "x".repeat(INLINE_MAX).as_str(), "é".repeat(12).as_str()] {
            let t = HeaderText::from(text);
            assert_eq!(t.as_str(), text);
            assert_eq!(t, text);
            assert_eq!(matches!(t.0, Repr::Inline { .. }), text.len() <= INLINE_MAX, "{text}");
            assert_eq!(t.clone().into_string(), text);
            assert_eq!(HeaderText::from(text.to_owned()), t);
        }
    }
}
