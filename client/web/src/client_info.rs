//! What a client says about itself in `Hello` and in election reports.

/// The browser family reported in `ClientInfo.browser_family`, from the user
/// agent string. Only the family: planners compare Chrome with Firefox, not
/// build numbers, and fewer distinct values keep the telemetry cheap to group.
pub fn browser_family(user_agent: &str) -> &'static str {
    let ua = user_agent.to_ascii_lowercase();
    // Order matters: Edge and Opera also say "chrome", Chrome also says "safari".
    if ua.contains("edg/") {
        "edge"
    } else if ua.contains("opr/") || ua.contains("opera") {
        "opera"
    } else if ua.contains("firefox/") {
        "firefox"
    } else if ua.contains("chrome/") || ua.contains("chromium/") || ua.contains("headlesschrome/") {
        "chrome"
    } else if ua.contains("safari/") {
        "safari"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_families_that_share_tokens() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36";
        let headless = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/130.0.0.0 Safari/537.36";
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0";
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0";
        let safari = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15";
        assert_eq!(browser_family(chrome), "chrome");
        assert_eq!(browser_family(headless), "chrome");
        assert_eq!(browser_family(edge), "edge");
        assert_eq!(browser_family(firefox), "firefox");
        assert_eq!(browser_family(safari), "safari");
        assert_eq!(browser_family("curl/8"), "other");
    }
}
