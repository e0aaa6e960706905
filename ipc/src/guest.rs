//! Guest config properties (ops 11 and 13, spec/status.md §6.4): the C
//! daemon's line scanner over one config and its JSON answer, as pure
//! functions over bytes. Reading the configs and the vmlist checks are the
//! handler's.
//!
//! What the handler does around these, as in C (`cfs_create_guest_conf_properties_msg`):
//! an empty vmlist answers `{\n\n}\n`; a single guest whose config is missing,
//! **empty** (C's copy of zero bytes is a null pointer) or of an unknown type
//! is EIO; for all guests (vmid 0) such guests are skipped.
//!
//! The scanner reproduces C's observable quirks, not only the documented
//! rules:
//! * A property found again counts towards C's "found all" early exit, not a
//!   property found for the first time. So with one property, scanning stops
//!   at its second occurrence: the value is the second one, not the last.
//! * Trimming a value's trailing whitespace writes a NUL into C's buffer.
//!   Another requested property matched later on the same line sees that NUL
//!   (its value may end there or be empty and so not count). An
//!   all-whitespace value is one whitespace byte, not "not found".
//! * Values end at the first NUL byte of the config line.
//!
//! C also skips lines whose first byte lies outside the range of the
//! properties' first bytes. Only a line starting with a property's first
//! byte (or `:` for an empty property, which is in that range too) can
//! match, so that filter changes nothing and is left out.

use smallvec::{SmallVec, smallvec};

/// The values of `props` in one guest config, in request order; `None` where
/// C finds none. Values borrow from `config`.
///
/// Lines are scanned until the first one starting with `[`; a line `p:
/// value` matches property `p` if it is longer than `p:`; the value starts
/// after the whitespace following `:` and ends before the line's trailing
/// whitespace. See the module documentation for C's quirks, which are kept.
/// A property is used up to its first NUL (a C string).
pub fn property_values<'a>(config: &'a [u8], props: &[&[u8]]) -> SmallVec<[Option<&'a [u8]>; 8]> {
    let mut found: SmallVec<[Option<&'a [u8]>; 8]> = smallvec![None; props.len()];
    if config.is_empty() {
        return found;
    }
    // C appends a newline if the config lacks one; the text after the last
    // newline is no line.
    let body = config.strip_suffix(b"\n").unwrap_or(config);
    // C counts in a u8 and compares with its u8 number of properties.
    let mut found_again: u8 = 0;
    let mut matches: SmallVec<[(usize, usize); 8]> = SmallVec::new();
    for line in body.split(|byte| *byte == b'\n') {
        match line.first() {
            None | Some(0) => continue,
            Some(b'[') => break,
            Some(_) => {}
        }
        let mut scan = Line {
            bytes: line,
            nul_at: SmallVec::new(),
        };
        matches.clear();
        for (index, prop) in props.iter().enumerate() {
            if let Some(start) = scan.match_value(c_string(prop)) {
                // Each property is tried once per line, so `found` holds
                // earlier lines only, as C's array does at this point.
                found_again = found_again.wrapping_add(u8::from(found[index].is_some()));
                matches.push((index, start));
            }
        }
        // The values are C strings read after the whole line was scanned.
        for &(index, start) in &matches {
            found[index] = Some(scan.c_string_at(start));
        }
        if usize::from(found_again) == props.len() {
            break;
        }
    }
    found
}

/// One config line and the positions where C wrote a NUL into it.
struct Line<'a> {
    bytes: &'a [u8],
    nul_at: SmallVec<[usize; 4]>,
}

impl<'a> Line<'a> {
    /// The byte C sees at `index` (< line length).
    fn at(&self, index: usize) -> u8 {
        if self.nul_at.contains(&index) {
            0
        } else {
            self.bytes[index]
        }
    }

    /// C `_get_property_value_from_line`: the value's start if the line
    /// holds `prop`, trimming the value's end with a NUL as C does.
    fn match_value(&mut self, prop: &[u8]) -> Option<usize> {
        let len = self.bytes.len();
        if len <= prop.len() + 1 {
            return None;
        }
        if self.at(prop.len()) != b':' || (0..prop.len()).any(|index| self.at(index) != prop[index])
        {
            return None;
        }
        let last = len - 1;
        let mut start = prop.len() + 1;
        while start < last && self.at(start) != 0 && is_c_space(self.at(start)) {
            start += 1;
        }
        if self.at(start) == 0 {
            return None;
        }
        let mut end = last;
        while end > start && is_c_space(self.at(end)) {
            end -= 1;
        }
        if end < last {
            self.nul_at.push(end + 1);
        }
        Some(start)
    }

    /// The C string at `start`: up to the first NUL, original or written,
    /// or the end of the line (where C's newline became a NUL).
    fn c_string_at(&self, start: usize) -> &'a [u8] {
        let bytes: &'a [u8] = self.bytes;
        let end = (start..bytes.len())
            .find(|index| self.at(*index) == 0)
            .unwrap_or(bytes.len());
        &bytes[start..end]
    }
}

/// C `isspace` in the C locale (pmxcfs never sets another locale).
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn c_string(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|byte| *byte == 0) {
        Some(end) => &bytes[..end],
        None => bytes,
    }
}

/// Appends the answer of ops 11 and 13 to `out`, byte for byte as C writes
/// it: `{\n`, one object per guest that has at least one of `props`, joined
/// by `,\n`, then `\n}\n` (so no guest gives `{\n\n}\n`). An object is
/// `"<vmid>":{"<prop>": "<value>",...}`: note C's space after the colon of
/// each property (not after the vmid's), properties in request order,
/// joined by `,`. Only `\` and `"` in values are escaped (with a
/// backslash); property names are written as they are, up to a NUL.
///
/// `guests` yields each guest's vmid and its [`property_values`] for
/// `props`.
pub fn properties_json<'a, G, V>(out: &mut Vec<u8>, props: &[&[u8]], guests: G)
where
    G: IntoIterator<Item = (u32, V)>,
    V: AsRef<[Option<&'a [u8]>]>,
{
    out.extend_from_slice(b"{\n");
    let mut first_guest = true;
    for (vmid, values) in guests {
        let mut first_value = true;
        for (prop, value) in props.iter().zip(values.as_ref()) {
            let Some(value) = value else { continue };
            if first_value {
                if !first_guest {
                    out.extend_from_slice(b",\n");
                }
                out.push(b'"');
                out.extend_from_slice(vmid.to_string().as_bytes());
                out.extend_from_slice(b"\":{");
                first_guest = false;
                first_value = false;
            } else {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(c_string(prop));
            out.extend_from_slice(b"\": \"");
            for &byte in c_string(value) {
                if byte == b'\\' || byte == b'"' {
                    out.push(b'\\');
                }
                out.push(byte);
            }
            out.push(b'"');
        }
        if !first_value {
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"\n}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values<'a>(config: &'a [u8], props: &[&[u8]]) -> Vec<Option<&'a [u8]>> {
        property_values(config, props).into_vec()
    }

    #[test]
    fn finds_values_in_request_order() {
        let config = b"boot: order=scsi0\ncores: 4\nlock: backup\nmemory: 2048\n";
        assert_eq!(
            values(config, &[b"memory", b"lock", b"tags"]),
            [Some(&b"2048"[..]), Some(b"backup"), None]
        );
    }

    #[test]
    fn trims_whitespace_on_both_sides() {
        assert_eq!(
            values(b"lock: \t backup \r\t \n", &[b"lock"]),
            [Some(&b"backup"[..])]
        );
        assert_eq!(values(b"lock:backup\n", &[b"lock"]), [Some(&b"backup"[..])]);
        assert_eq!(
            values(b"description: a b  c \n", &[b"description"]),
            [Some(&b"a b  c"[..])]
        );
    }

    #[test]
    fn the_line_must_be_longer_than_the_prefix() {
        assert_eq!(values(b"lock:\n", &[b"lock"]), [None]);
        assert_eq!(values(b"lock:x\n", &[b"lock"]), [Some(&b"x"[..])]);
        // "lockx: 1" is not "lock".
        assert_eq!(values(b"lockx: 1\nlock2: 2\n", &[b"lock"]), [None]);
        assert_eq!(values(b"lock 1\n", &[b"lock"]), [None]);
    }

    #[test]
    fn all_whitespace_value_is_one_whitespace_byte() {
        // C stops skipping at the last byte and keeps it.
        assert_eq!(values(b"lock:   \n", &[b"lock"]), [Some(&b" "[..])]);
        assert_eq!(values(b"lock: \t\n", &[b"lock"]), [Some(&b"\t"[..])]);
    }

    #[test]
    fn stops_at_the_first_section() {
        let config = b"cores: 1\n[snap1]\nlock: snapshot\ncores: 2\n";
        assert_eq!(
            values(config, &[b"cores", b"lock"]),
            [Some(&b"1"[..]), None]
        );
        assert_eq!(values(b"[PENDING]\nlock: x\n", &[b"lock"]), [None]);
    }

    #[test]
    fn later_occurrence_wins_until_c_counts_all_found() {
        // Two properties: the repeat of `a` counts once, not yet both.
        let config = b"a: 1\nb: 1\na: 2\nb: 2\na: 3\n";
        assert_eq!(values(config, &[b"a", b"b"]), [Some(&b"2"[..]), Some(b"2")]);
        // One property: its second occurrence ends the scan.
        assert_eq!(values(b"a: 1\na: 2\na: 3\n", &[b"a"]), [Some(&b"2"[..])]);
        // Found once only: the scan runs on.
        assert_eq!(
            values(b"a: 1\nb: 1\na: 2\n", &[b"a", b"b"]),
            [Some(&b"2"[..]), Some(b"1")]
        );
    }

    #[test]
    fn the_same_property_twice_matches_one_line_for_both() {
        // Both entries match each line; the second line counts two
        // repeats, which is "all found".
        let config = b"a: 1\na: 2\na: 3\n";
        assert_eq!(values(config, &[b"a", b"a"]), [Some(&b"2"[..]), Some(b"2")]);
    }

    #[test]
    fn trimming_nul_is_seen_by_a_later_property_on_the_line() {
        // `a` trims "b: " to "b:" by writing a NUL at the trailing space;
        // `a:b` then starts its value on that NUL: not found.
        assert_eq!(
            values(b"a:b: \n", &[b"a", b"a:b"]),
            [Some(&b"b:"[..]), None]
        );
        // The other order: `a:b` finds the space, but C reads its value
        // after `a` wrote the NUL there: an empty value.
        assert_eq!(
            values(b"a:b: \n", &[b"a:b", b"a"]),
            [Some(&b""[..]), Some(b"b:")]
        );
    }

    #[test]
    fn config_without_final_newline_and_empty_lines() {
        assert_eq!(values(b"\n\nlock: x", &[b"lock"]), [Some(&b"x"[..])]);
        assert_eq!(values(b"", &[b"lock"]), [None]);
        assert_eq!(values(b"\n", &[b"lock"]), [None]);
    }

    #[test]
    fn values_end_at_a_nul_byte() {
        assert_eq!(values(b"lock: ab\0cd\n", &[b"lock"]), [Some(&b"ab"[..])]);
        // A value starting with NUL is no value.
        assert_eq!(values(b"lock:\0x\n", &[b"lock"]), [None]);
        // A line starting with NUL is skipped.
        assert_eq!(values(b"\0lock: 1\n", &[b"lock"]), [None]);
    }

    #[test]
    fn empty_property_matches_a_line_starting_with_a_colon() {
        assert_eq!(values(b"lock: 1\n", &[b""]), [None]);
        assert_eq!(values(b":x\n", &[b""]), [Some(&b"x"[..])]);
    }

    fn json(props: &[&[u8]], guests: &[(u32, Vec<Option<&[u8]>>)]) -> String {
        let mut out = Vec::new();
        properties_json(&mut out, props, guests.iter().map(|(v, x)| (*v, x)));
        String::from_utf8(out).expect("test output is UTF-8")
    }

    #[test]
    fn json_empty_and_nothing_found() {
        assert_eq!(json(&[b"lock"], &[]), "{\n\n}\n");
        assert_eq!(
            json(&[b"lock"], &[(100, vec![None]), (101, vec![None])]),
            "{\n\n}\n"
        );
    }

    #[test]
    fn json_bytes_match_c() {
        let props: &[&[u8]] = &[b"lock", b"tags", b"name"];
        let guests = [
            (100, vec![Some(&b"backup"[..]), None, Some(b"vm1")]),
            (101, vec![None, None, None]),
            (102, vec![None, Some(&b"a;b"[..]), None]),
        ];
        assert_eq!(
            json(props, &guests),
            "{\n\"100\":{\"lock\": \"backup\",\"name\": \"vm1\"},\n\"102\":{\"tags\": \"a;b\"}\n}\n"
        );
    }

    #[test]
    fn json_escapes_only_backslash_and_quote() {
        let guests = [(100, vec![Some(&b"a\\b\"c\td/"[..])])];
        assert_eq!(
            json(&[b"description"], &guests),
            "{\n\"100\":{\"description\": \"a\\\\b\\\"c\td/\"}\n}\n"
        );
    }

    /// C's algorithm on a mutable copy of the config, index for pointer.
    fn reference(config: &[u8], props: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
        let mut conf = config.to_vec();
        if conf.is_empty() {
            return vec![None; props.len()];
        }
        if conf.last() != Some(&b'\n') {
            conf.push(b'\n');
        }
        let mut found: Vec<Option<usize>> = vec![None; props.len()];
        let mut count: u8 = 0;
        let mut line = 0;
        'lines: while let Some(newline) = conf[line..].iter().position(|b| *b == b'\n') {
            let newline = line + newline;
            conf[newline] = 0;
            let first = conf[line];
            if first != 0 {
                if first == b'[' {
                    break;
                }
                let line_len = newline - line;
                for (i, prop) in props.iter().enumerate() {
                    let prop = c_string(prop);
                    if line_len <= prop.len() + 1 {
                        continue;
                    }
                    if conf[line + prop.len()] != b':' || &conf[line..line + prop.len()] != prop {
                        continue;
                    }
                    let mut start = line + prop.len() + 1;
                    let mut end = line + line_len - 1;
                    while start < end && conf[start] != 0 && is_c_space(conf[start]) {
                        start += 1;
                    }
                    if conf[start] == 0 {
                        continue;
                    }
                    while end > start && is_c_space(conf[end]) {
                        end -= 1;
                    }
                    if end < line + line_len - 1 {
                        conf[end + 1] = 0;
                    }
                    count = count.wrapping_add(u8::from(found[i].is_some()));
                    found[i] = Some(start);
                }
                if usize::from(count) == props.len() {
                    break 'lines;
                }
            }
            line = newline + 1;
        }
        found
            .into_iter()
            .map(|start| start.map(|s| c_string(&conf[s..]).to_vec()))
            .collect()
    }

    fn config_strategy() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            proptest::collection::vec(prop::sample::select(&b"ab: \t\r\0[x"[..]), 0..12),
            Just(b"a: 1".to_vec()),
            Just(b"b:  2  ".to_vec()),
            Just(b"a:b: ".to_vec()),
        ];
        proptest::collection::vec(line, 0..8).prop_map(|lines| lines.join(&b'\n'))
    }

    fn props_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let prop = prop_oneof![
            Just(b"a".to_vec()),
            Just(b"b".to_vec()),
            Just(b"a:b".to_vec()),
            Just(b"".to_vec()),
            proptest::collection::vec(prop::sample::select(&b"ab: "[..]), 0..4),
        ];
        proptest::collection::vec(prop, 0..5)
    }

    proptest! {
        #[test]
        fn scanner_equals_c_on_a_mutable_buffer(config in config_strategy(), props in props_strategy()) {
            let props: Vec<&[u8]> = props.iter().map(Vec::as_slice).collect();
            let ours: Vec<Option<Vec<u8>>> = property_values(&config, &props)
                .into_iter()
                .map(|v| v.map(<[u8]>::to_vec))
                .collect();
            prop_assert_eq!(ours, reference(&config, &props));
        }

        #[test]
        fn scanner_never_panics(config in proptest::collection::vec(any::<u8>(), 0..256),
                                props in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..4), 0..4)) {
            let props: Vec<&[u8]> = props.iter().map(Vec::as_slice).collect();
            let _ = property_values(&config, &props);
        }
    }
}
