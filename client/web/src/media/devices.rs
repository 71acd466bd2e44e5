//! Which camera, microphone and speaker to use: the person's last choice,
//! kept in the browser (`localStorage`) between visits, and used only while
//! that device is still there — a camera unplugged since falls back to the
//! browser's default instead of failing the lobby.

/// A device the browser offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub kind: DeviceKind,
    pub id: String,
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Camera,
    Microphone,
    Speaker,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 3] = [
        DeviceKind::Camera,
        DeviceKind::Microphone,
        DeviceKind::Speaker,
    ];

    /// The browser's name for the kind (`MediaDeviceInfo.kind`).
    pub fn from_browser(kind: &str) -> Option<Self> {
        match kind {
            "videoinput" => Some(DeviceKind::Camera),
            "audioinput" => Some(DeviceKind::Microphone),
            "audiooutput" => Some(DeviceKind::Speaker),
            _ => None,
        }
    }

    /// Where the choice is remembered.
    pub fn storage_key(self) -> &'static str {
        match self {
            DeviceKind::Camera => "rallypoint.camera",
            DeviceKind::Microphone => "rallypoint.microphone",
            DeviceKind::Speaker => "rallypoint.speaker",
        }
    }
}

/// The chosen devices; `None` is the browser's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choice {
    pub camera: Option<String>,
    pub microphone: Option<String>,
    pub speaker: Option<String>,
}

impl Choice {
    pub fn get(&self, kind: DeviceKind) -> Option<&str> {
        match kind {
            DeviceKind::Camera => self.camera.as_deref(),
            DeviceKind::Microphone => self.microphone.as_deref(),
            DeviceKind::Speaker => self.speaker.as_deref(),
        }
    }

    pub fn set(&mut self, kind: DeviceKind, id: Option<String>) {
        let id = id.filter(|id| !id.is_empty() && id != "default");
        match kind {
            DeviceKind::Camera => self.camera = id,
            DeviceKind::Microphone => self.microphone = id,
            DeviceKind::Speaker => self.speaker = id,
        }
    }

    /// The choice with every device that is no longer offered forgotten
    /// (so the default is used instead). Before permission is granted the
    /// browser lists devices without ids: nothing is forgotten then.
    pub fn still_available(mut self, offered: &[Device]) -> Self {
        if offered.iter().all(|d| d.id.is_empty()) {
            return self;
        }
        for kind in DeviceKind::ALL {
            let gone = self
                .get(kind)
                .is_some_and(|id| !offered.iter().any(|d| d.kind == kind && d.id == id));
            if gone {
                self.set(kind, None);
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(kind: DeviceKind, id: &str) -> Device {
        Device {
            kind,
            id: id.into(),
            label: format!("{kind:?} {id}"),
        }
    }

    #[test]
    fn a_device_that_went_away_falls_back_to_the_default() {
        let mut choice = Choice::default();
        choice.set(DeviceKind::Camera, Some("cam-2".into()));
        choice.set(DeviceKind::Microphone, Some("mic-9".into()));
        let offered = [
            device(DeviceKind::Camera, "cam-1"),
            device(DeviceKind::Camera, "cam-2"),
            device(DeviceKind::Microphone, "mic-1"),
        ];
        let kept = choice.still_available(&offered);
        assert_eq!(kept.camera.as_deref(), Some("cam-2"));
        assert_eq!(kept.microphone, None, "mic-9 is gone");
    }

    #[test]
    fn before_permission_nothing_is_forgotten() {
        let mut choice = Choice::default();
        choice.set(DeviceKind::Camera, Some("cam-2".into()));
        let anonymous = [device(DeviceKind::Camera, "")];
        assert_eq!(choice.clone().still_available(&anonymous), choice);
    }

    #[test]
    fn the_default_is_no_choice() {
        let mut choice = Choice::default();
        choice.set(DeviceKind::Speaker, Some("default".into()));
        choice.set(DeviceKind::Camera, Some(String::new()));
        assert_eq!(choice, Choice::default());
        assert_eq!(
            DeviceKind::from_browser("videoinput"),
            Some(DeviceKind::Camera)
        );
        assert_eq!(DeviceKind::from_browser("other"), None);
    }
}
