//! VERIFY_TOKEN (op 12, spec/ipc.md §4.9): is `"<userid> <token>"` one of
//! the lines of `priv/token.cfg`?
//!
//! The format checks ([`parse`]) are pure and come before the C daemon
//! reads `token.cfg`, so the request decoder runs them
//! ([`crate::proto::decode`]); [`verify`] is what the handler does with the
//! file. [`verify`] repeats the cheap format check so that it is correct on
//! its own (an empty token would otherwise match an empty line). Errors are
//! positive errno values.

use libc::{EINVAL, ENOENT};

/// The token of a VERIFY_TOKEN request payload (the bytes after the 16-byte
/// header): all but the last byte, which must be NUL. EINVAL if the token
/// is empty, contains a newline or a NUL, or the last byte is not NUL (C
/// checks in that order; all give EINVAL).
pub fn parse(payload: &[u8]) -> Result<&[u8], i32> {
    let Some((&last, token)) = payload.split_last() else {
        return Err(EINVAL);
    };
    if token.is_empty() || token.contains(&b'\n') || last != 0 || token.contains(&0) {
        return Err(EINVAL);
    }
    Ok(token)
}

/// Ok if `token` equals a whole line of `token_cfg` (split on `\n`; the last
/// line may lack its newline). ENOENT if the file is missing (`None`; also
/// for a directory), empty, or has no such line. EINVAL for a token that
/// [`parse`] would not return.
pub fn verify(token_cfg: Option<&[u8]>, token: &[u8]) -> Result<(), i32> {
    if token.is_empty() || token.contains(&b'\n') || token.contains(&0) {
        return Err(EINVAL);
    }
    let Some(config) = token_cfg else {
        return Err(ENOENT);
    };
    if config
        .split(|byte| *byte == b'\n')
        .any(|line| line == token)
    {
        Ok(())
    } else {
        Err(ENOENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_takes_the_token_before_the_final_nul() {
        assert_eq!(parse(b"root@pam!t 1234\0"), Ok(&b"root@pam!t 1234"[..]));
        assert_eq!(parse(b"x\0"), Ok(&b"x"[..]));
    }

    #[test]
    fn parse_rejects_what_c_rejects() {
        // t = size − 17 ≤ 0: no payload, or only the NUL.
        assert_eq!(parse(b""), Err(EINVAL));
        assert_eq!(parse(b"\0"), Err(EINVAL));
        // A newline in the token, even before a proper NUL.
        assert_eq!(parse(b"a\nb\0"), Err(EINVAL));
        // The last byte is not NUL.
        assert_eq!(parse(b"abc"), Err(EINVAL));
        // An embedded NUL.
        assert_eq!(parse(b"ab\0c\0"), Err(EINVAL));
        assert_eq!(parse(b"\0\0"), Err(EINVAL));
    }

    #[test]
    fn verify_matches_whole_lines_only() {
        let config = b"root@pam!a 1111\nroot@pam!b 2222\n";
        assert_eq!(verify(Some(config), b"root@pam!a 1111"), Ok(()));
        assert_eq!(verify(Some(config), b"root@pam!b 2222"), Ok(()));
        assert_eq!(verify(Some(config), b"root@pam!a 111"), Err(ENOENT));
        assert_eq!(verify(Some(config), b"root@pam!a 11111"), Err(ENOENT));
        assert_eq!(verify(Some(config), b"oot@pam!b 2222"), Err(ENOENT));
    }

    #[test]
    fn verify_last_line_without_newline() {
        assert_eq!(verify(Some(b"a 1\nb 2"), b"b 2"), Ok(()));
        assert_eq!(verify(Some(b"b 2"), b"b 2"), Ok(()));
    }

    #[test]
    fn verify_missing_empty_or_short_file_is_enoent() {
        assert_eq!(verify(None, b"a 1"), Err(ENOENT));
        assert_eq!(verify(Some(b""), b"a 1"), Err(ENOENT));
        assert_eq!(verify(Some(b"a"), b"a 1"), Err(ENOENT));
    }

    #[test]
    fn verify_empty_lines_do_not_match_and_cr_is_kept() {
        assert_eq!(verify(Some(b"\n\n"), b"x"), Err(ENOENT));
        // A CRLF file: the line is "a 1\r", which is not the token.
        assert_eq!(verify(Some(b"a 1\r\n"), b"a 1"), Err(ENOENT));
    }

    #[test]
    fn verify_rejects_malformed_tokens() {
        assert_eq!(verify(Some(b"\n"), b""), Err(EINVAL));
        assert_eq!(verify(Some(b"a\nb"), b"a\nb"), Err(EINVAL));
        assert_eq!(verify(Some(b"a\0b"), b"a\0b"), Err(EINVAL));
    }

    #[test]
    fn verify_line_with_nul_does_not_match() {
        assert_eq!(verify(Some(b"ab\0d\n"), b"abcd"), Err(ENOENT));
    }
}
