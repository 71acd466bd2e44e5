//! What the page's address asks for: `?location=<slug>` picks a simulated
//! client location of the latency lab (its candidate list is served at
//! `/candidates/<slug>.json`), `?room=` and `?name=` pre-fill the lobby.

use rallypoint_protocol::token::Claims;

/// Settings read from the page's query string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageParams {
    pub location: Option<String>,
    pub room: Option<String>,
    pub name: Option<String>,
}

impl PageParams {
    /// Parses `search` (`?a=b&c=d`, with or without the `?`). Unknown keys are
    /// ignored; a location that is not a plain slug is ignored too, so the
    /// page cannot be made to fetch an arbitrary path.
    pub fn parse(search: &str) -> Self {
        let mut params = PageParams::default();
        for pair in search.trim_start_matches('?').split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            if value.is_empty() {
                continue;
            }
            match key {
                "location" if is_slug(&value) => params.location = Some(value),
                "room" => params.room = Some(value),
                "name" => params.name = Some(value),
                _ => {}
            }
        }
        params
    }

    /// Where the candidate list comes from.
    pub fn candidates_path(&self) -> String {
        match &self.location {
            Some(slug) => format!("/candidates/{slug}.json"),
            None => "/candidates.json".to_owned(),
        }
    }
}

/// The link that invites someone into `room`: this app's page (`origin`
/// and `path` of the current address) with the room filled in. No location
/// and no name: the invitee is elsewhere, and someone else.
pub fn invite_url(origin: &str, path: &str, room: &str) -> String {
    format!("{origin}{path}?room={}", percent_encode(room))
}

/// The development token issuer's address for `room` and `name`.
pub fn token_path(room: &str, name: &str) -> String {
    format!(
        "/token?room={}&name={}",
        percent_encode(room),
        percent_encode(name)
    )
}

/// Where the development issuer mints a fresh token like `token`: the same
/// room, name and user (`sub`) — the issuer picks a new user unless told,
/// and relays take a `Refresh` only for the same user and room. `None` for
/// a token that is not a JWT with those claims. The token is read, not
/// verified: it is the app's own.
pub fn refresh_path(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let claims: Claims = serde_json::from_slice(&base64url_decode(payload)?).ok()?;
    Some(format!(
        "{}&user={}",
        token_path(&claims.room, &claims.name),
        percent_encode(&claims.sub)
    ))
}

/// Decodes unpadded base64url (a JWT part); `None` on anything else.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut bits, mut held) = (0u32, 0u32);
    for c in s.bytes() {
        bits = bits << 6 | u32::from(value(c)?);
        held += 6;
        if held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
            bits &= (1 << held) - 1;
        }
    }
    Some(out)
}

/// Checks the lobby's inputs before anything is fetched, with messages for people.
pub fn check_lobby(room: &str, name: &str) -> Result<(), String> {
    rallypoint_protocol::subjects::validate_room(room)
        .map_err(|e| format!("Room name: {e}. Use letters, digits, '-' or '_' (at most 64)."))?;
    let name = name.trim();
    if name.is_empty() {
        return Err("Enter your name so the others know who joined.".into());
    }
    if name.chars().count() > 64 {
        return Err("Your name is too long (at most 64 characters).".into());
    }
    Ok(())
}

fn is_slug(s: &str) -> bool {
    s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? << 4 | hex(bytes[i + 2])?))
            .flatten();
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_selects_its_candidate_list() {
        let p = PageParams::parse("?location=client-in-singapore&room=standup&name=Ada%20L");
        assert_eq!(p.candidates_path(), "/candidates/client-in-singapore.json");
        assert_eq!(p.room.as_deref(), Some("standup"));
        assert_eq!(p.name.as_deref(), Some("Ada L"));
        assert_eq!(PageParams::parse("").candidates_path(), "/candidates.json");
    }

    #[test]
    fn a_location_that_is_not_a_slug_is_ignored() {
        let p = PageParams::parse("?location=..%2F..%2Fetc%2Fpasswd");
        assert_eq!(p.location, None);
        assert_eq!(p.candidates_path(), "/candidates.json");
    }

    #[test]
    fn an_invite_opens_the_same_room_and_nothing_else() {
        let url = invite_url("https://call.example", "/", "team sync/1");
        assert_eq!(url, "https://call.example/?room=team%20sync%2F1");
        let back = PageParams::parse(url.split_once('?').unwrap().1);
        assert_eq!(back.room.as_deref(), Some("team sync/1"));
        assert_eq!((back.location, back.name), (None, None));
    }

    #[test]
    fn token_requests_are_encoded() {
        assert_eq!(
            token_path("standup", "Zoë & co"),
            "/token?room=standup&name=Zo%C3%AB%20%26%20co"
        );
    }

    #[test]
    fn a_fresh_token_is_asked_for_the_same_user_room_and_name() {
        // {"sub":"dev-00ab","name":"Zoë & co","room":"standup","exp":1790000000,"iss":"rallypoint-dev"}
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
            eyJzdWIiOiJkZXYtMDBhYiIsIm5hbWUiOiJab8OrICYgY28iLCJyb29tIjoic3RhbmR1cCIsImV4cCI6MTc5MDAwMDAwMCwiaXNzIjoicmFsbHlwb2ludC1kZXYifQ.\
            c2lnbmF0dXJl";
        assert_eq!(
            refresh_path(token).as_deref(),
            Some("/token?room=standup&name=Zo%C3%AB%20%26%20co&user=dev-00ab")
        );
        assert_eq!(refresh_path("not-a-token"), None);
        assert_eq!(refresh_path("a.!!!.c"), None);
    }

    #[test]
    fn base64url_decodes_both_url_safe_digits() {
        assert_eq!(base64url_decode("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(base64url_decode("aGk").unwrap(), b"hi");
    }

    #[test]
    fn lobby_inputs_are_checked_with_readable_messages() {
        assert!(check_lobby("standup", "Ada").is_ok());
        assert!(
            check_lobby("stand up", "Ada")
                .unwrap_err()
                .starts_with("Room name")
        );
        assert!(
            check_lobby("standup", "  ")
                .unwrap_err()
                .contains("Enter your name")
        );
        assert!(
            check_lobby("standup", &"x".repeat(65))
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn stray_percent_signs_survive_decoding() {
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41"), "A");
    }
}
