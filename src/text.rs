//! Free text that users give things (a device's name and description, a
//! sensor's label and unit, a channel's description, a member's label):
//! one rule for all of it, shared by the features that store such text.

use crate::error::WireError;

/// Is `c` a Unicode bidirectional override or isolate (U+202A–U+202E,
/// U+2066–U+2069)? In a name or description they reorder how the text
/// *around* it is shown (in a list, a spreadsheet, a terminal), so a name
/// could display as something else than it is ("Trojan Source").
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `v` as the text field `field`: at most `max` bytes, no control or
/// bidirectional override characters (`400 bad_value`).
pub fn text(field: &str, v: &str, max: usize) -> Result<String, WireError> {
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(WireError::bad_request(
            "bad_value",
            format!("{field}: at most {max} bytes of printable text"),
        ));
    }
    if v.chars().any(is_bidi_control) {
        return Err(WireError::bad_request(
            "bad_value",
            format!("{field}: bidirectional override/isolate characters (U+202A-U+202E, U+2066-U+2069) are not allowed"),
        ));
    }
    Ok(v.to_string())
}
