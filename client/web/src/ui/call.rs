//! The call view: video tiles, controls, the connection badge, the
//! participant list, the election and the statistics.

use std::rc::Rc;

use leptos::html;
use leptos::prelude::*;

use super::Screen;
use super::election::ElectionPanel;
use crate::call::{Call, CallState, Phase, RemotePeer, screen_canvas_id};
use crate::clock;
use crate::media::capture;
use crate::media::devices::{Device, DeviceKind};
use crate::stats::{PeerLink, peer_link};

/// A participant whose last video frame is older than this shows its name
/// instead of a frozen picture (camera off, or video not arriving).
const VIDEO_STALE_MS: f64 = 2_000.0;

#[component]
pub fn CallView(call: Rc<Call>, screen: RwSignal<Screen, LocalStorage>) -> impl IntoView {
    let state = call.state;
    let phase_name = move || match state.phase.get() {
        Phase::Electing => "electing",
        Phase::Joining { .. } => "joining",
        Phase::InCall => "in-call",
        Phase::Reconnecting { .. } => "reconnecting",
        Phase::NoRelay { .. } => "no-relay",
        Phase::Failed(_) => "failed",
        Phase::Ended => "ended",
    };
    let leave = {
        let call = call.clone();
        move |_| {
            call.leave();
            screen.set(Screen::Lobby);
        }
    };
    let toggle_mute = {
        let call = call.clone();
        move |_| call.set_muted(!state.muted.get_untracked())
    };
    let toggle_camera = {
        let call = call.clone();
        move |_| call.set_camera(!state.camera_on.get_untracked())
    };
    let toggle_sharing = {
        let call = call.clone();
        move |_| {
            if state.sharing.get_untracked() {
                call.stop_sharing();
            } else {
                let call = call.clone();
                leptos::task::spawn_local(async move { call.share_screen().await });
            }
        }
    };
    let sharing = move || {
        state
            .peers
            .get()
            .into_iter()
            .filter(|p| p.media_state.get().sharing_screen)
            .collect::<Vec<_>>()
    };
    view! {
        <div class="call" data-view="call" data-phase=phase_name class:electing=move || state.phase.with(|p| *p == Phase::Electing)>
            <header class="topbar">
                <h1>"rallypoint"</h1>
                <span class="room">{move || format!("Room {}", state.room.get())}</span>
                <InviteLink state />
                <ConnectionBadge state />
            </header>
            <Banner state screen />
            <main class="stage">
                <For each=sharing key=|p| p.peer_id.clone() children=move |peer| view! { <ScreenTile peer /> } />
                <section class="tiles" aria-label="Video" class:many=move || state.peers.with(|p| p.len() + 1 > 4)
                    data-participants=move || state.peers.with(|p| p.len() + 1)>
                    <SelfTile call=call.clone() />
                    <For
                        each=move || state.peers.get()
                        key=|p| (p.peer_id.clone(), p.name.clone(), p.region.clone())
                        children=move |peer| view! { <RemoteTile peer now_ms=state.now_ms /> }
                    />
                </section>
            </main>
            <aside class="side">
                <ElectionPanel state />
                <Participants state />
                <StatsPanel state />
            </aside>
            <footer class="controls" aria-label="Call controls">
                <button type="button" on:click=toggle_mute aria-pressed=move || state.muted.get().to_string()
                    disabled=move || !state.has_devices.get()>
                    {move || if state.muted.get() { "Unmute microphone" } else { "Mute microphone" }}
                </button>
                <button type="button" on:click=toggle_camera aria-pressed=move || (!state.camera_on.get()).to_string()
                    disabled=move || !state.has_devices.get()>
                    {move || if state.camera_on.get() { "Turn camera off" } else { "Turn camera on" }}
                </button>
                <CameraSwitch call=call.clone() />
                <button type="button" on:click=toggle_sharing aria-pressed=move || state.sharing.get().to_string()>
                    {move || if state.sharing.get() { "Stop sharing" } else { "Share screen" }}
                </button>
                <button type="button" class="leave" on:click=leave>"Leave call"</button>
                <span class="error" role="alert">{move || state.media_error.get()}</span>
            </footer>
        </div>
    }
}

/// The link to this room, and a button that copies it (where the browser
/// lets the page write the clipboard; the link itself always works).
#[component]
fn InviteLink(state: CallState) -> impl IntoView {
    let url = move || {
        let location = web_sys::window().map(|w| w.location());
        let origin = location
            .as_ref()
            .and_then(|l| l.origin().ok())
            .unwrap_or_default();
        let path = location
            .as_ref()
            .and_then(|l| l.pathname().ok())
            .unwrap_or_else(|| "/".into());
        crate::params::invite_url(&origin, &path, &state.room.get())
    };
    let copied = RwSignal::new(false);
    let copy = move |_| {
        if let Some(window) = web_sys::window() {
            let _ = window.navigator().clipboard().write_text(&url());
            copied.set(true);
        }
    };
    view! {
        <span class="invite">
            <a href=url data-invite-link="" title="Send this link to invite someone to this room">"Invite link"</a>
            <button type="button" on:click=copy>{move || if copied.get() { "Copied" } else { "Copy" }}</button>
        </span>
    }
}

/// What is going on with the connection, when it is not simply fine.
#[component]
fn Banner(state: CallState, screen: RwSignal<Screen, LocalStorage>) -> impl IntoView {
    let message = move || match state.phase.get() {
        Phase::Electing => Some((
            "info",
            "Measuring every relay to pick the fastest…".to_owned(),
        )),
        Phase::Joining { via } => Some(("info", format!("Joining the room via {via}…"))),
        Phase::InCall => None,
        Phase::Reconnecting { via: Some(via) } => {
            Some(("warn", format!("Reconnecting via {via}…")))
        }
        Phase::Reconnecting { via: None } => Some((
            "warn",
            "Connection to the relay lost; reconnecting…".to_owned(),
        )),
        Phase::NoRelay { retry_in, attempt } => Some((
            "error",
            format!(
                "No relay reachable (attempt {attempt}); retrying in {:.0} s. Check your network connection.",
                retry_in.as_secs_f64()
            ),
        )),
        Phase::Failed(why) => Some(("error", why)),
        // Leaving returns to the lobby at once.
        Phase::Ended => None,
    };
    let failed = move || state.phase.with(|p| matches!(p, Phase::Failed(_)));
    view! {
        <div class="banner-slot" role="status" aria-live="polite">
            {move || message().map(|(level, text)| view! {
                <p class=format!("banner {level}")>
                    {text}
                    <Show when=failed>
                        " "
                        <button type="button" on:click=move |_| screen.set(Screen::Lobby)>"Back to the lobby"</button>
                    </Show>
                </p>
            })}
        </div>
    }
}

/// Region, transport, RTT, loss and bitrate of the serving relay.
#[component]
fn ConnectionBadge(state: CallState) -> impl IntoView {
    let serving_row = move || {
        state
            .candidates
            .with(|rows| rows.iter().find(|r| r.serving).cloned())
    };
    view! {
        <div class="badge" role="status" aria-label="Connection">
            {move || match state.serving.get() {
                None => view! { <span class="dot off"></span><span>"Not connected"</span> }.into_any(),
                Some(s) => {
                    let row = serving_row();
                    let rtt = row.as_ref().and_then(|r| r.median_ms).map(|m| format!("{m:.0} ms")).unwrap_or_else(|| "–".into());
                    let loss = row.as_ref().map(|r| {
                        let total = r.samples + r.lost;
                        if total == 0 { 0.0 } else { 100.0 * r.lost as f64 / total as f64 }
                    }).unwrap_or(0.0);
                    let sending = state.sending.get();
                    let transport = if s.transport == "wt" { "WebTransport" } else { "WebSocket" };
                    view! {
                        <span class="dot on"></span>
                        <span title=format!("relay {}", s.relay_id)>{s.region.clone()}</span>
                        <span>{transport}</span>
                        <span>"RTT "{rtt}</span>
                        <span>{format!("loss {loss:.1}%")}</span>
                        <span>{format!("↑ {:.0} ↓ {:.0} kbit/s", sending.up_kbps, sending.down_kbps)}</span>
                    }.into_any()
                }
            }}
        </div>
    }
}

#[component]
fn SelfTile(call: Rc<Call>) -> impl IntoView {
    let state = call.state;
    let video: NodeRef<html::Video> = NodeRef::new();
    let stream = call.stream();
    Effect::new(move |_| {
        if let (Some(video), Some(stream)) = (video.get(), &stream) {
            video.set_src_object(Some(stream));
        }
    });
    view! {
        <figure class="tile self" class:off=move || !state.camera_on.get()
            data-camera-label=move || state.camera_label.get()>
            <video node_ref=video autoplay=true muted=true playsinline=true aria-label="Your camera"></video>
            <figcaption>
                "You"
                {move || state.muted.get().then_some(" · muted")}
                {move || (!state.camera_on.get()).then_some(" · camera off")}
            </figcaption>
        </figure>
    }
}

/// Which camera the call sends from, switchable during the call (shown
/// when there is more than one).
#[component]
fn CameraSwitch(call: Rc<Call>) -> impl IntoView {
    let state = call.state;
    let cameras: RwSignal<Vec<Device>> = RwSignal::new(Vec::new());
    if state.has_devices.get_untracked() {
        leptos::task::spawn_local(async move {
            let listed = capture::devices().await;
            let _ = cameras.try_set(
                listed
                    .into_iter()
                    .filter(|d| d.kind == DeviceKind::Camera && !d.id.is_empty())
                    .collect(),
            );
        });
    }
    let switch = move |ev| {
        let id = event_target_value(&ev);
        let call = call.clone();
        leptos::task::spawn_local(async move { call.switch_camera(id).await });
    };
    view! {
        <select aria-label="Camera" data-camera-switch="" on:change=switch
            hidden=move || cameras.with(|c| c.len() < 2)>
            {move || cameras.get().into_iter().map(|d| {
                let selected = d.label == state.camera_label.get();
                view! { <option value=d.id selected=selected>{d.label}</option> }
            }).collect_view()}
        </select>
    }
}

/// A participant's shared screen, shown large above the tiles.
#[component]
fn ScreenTile(peer: RemotePeer) -> impl IntoView {
    let stats = peer.stats;
    view! {
        <figure class="tile screen" data-screen-of=peer.peer_id.clone()
            data-screen-decoded=move || stats.with(|s| s.screen_decoded)>
            <canvas id=screen_canvas_id(&peer.peer_id) width="1280" height="720" role="img"
                aria-label=format!("Screen shared by {}", peer.name)></canvas>
            <figcaption>{format!("{}'s screen", peer.name)}</figcaption>
        </figure>
    }
}

#[component]
fn RemoteTile(peer: RemotePeer, now_ms: RwSignal<f64>) -> impl IntoView {
    let stats = peer.stats;
    let stale = move || {
        // Re-evaluated with every decoded frame, and every second with the rates.
        let now = clock::now_ms();
        stats.with(|s| s.last_video_at.is_none_or(|at| now - at > VIDEO_STALE_MS))
    };
    let ms = |v: Option<f64>| v.map(|m| format!("{m:.1}")).unwrap_or_default();
    let speaking = move || {
        // Every second too: a participant who stops mid-word stops speaking.
        let now = now_ms.get().max(clock::now_ms());
        stats.with(|s| s.speaking_until.is_some_and(|until| now < until))
    };
    let media_state = peer.media_state;
    let muted = move || media_state.with(|s| s.muted);
    let camera_off = move || media_state.with(|s| s.camera_off);
    let link = move || {
        // Every second, and with every decoded frame.
        let now = now_ms.get().max(clock::now_ms());
        let sends = !(muted() && camera_off());
        stats.with(|s| {
            let video_gap = match (camera_off(), s.last_video_at) {
                (false, Some(at)) => now - at,
                _ => 0.0,
            };
            peer_link(
                now,
                s.moved_at,
                s.last_media_at,
                sends,
                s.video_latency_p95_ms,
                video_gap,
            )
        })
    };
    let link_word = move || match link() {
        PeerLink::Good => None,
        PeerLink::Moving => Some(("moving", "moving relays…")),
        PeerLink::Poor => Some(("poor", "poor connection")),
        PeerLink::Lost => Some(("lost", "connection lost")),
    };
    view! {
        <figure
            class="tile remote"
            class:stale=move || stale() || camera_off()
            class:speaking=move || speaking() && !muted()
            data-speaking=move || (speaking() && !muted()).to_string()
            data-muted=move || muted().to_string()
            data-camera-off=move || camera_off().to_string()
            data-link=move || link_word().map_or("good", |(class, _)| class)
            data-moves=move || stats.with(|s| s.moves)
            data-peer-id=peer.peer_id.clone()
            data-frames-decoded=move || stats.with(|s| s.video_decoded)
            data-audio-decoded=move || stats.with(|s| s.audio_decoded)
            data-latency-p50-ms=move || stats.with(|s| ms(s.video_latency_p50_ms))
            data-latency-p95-ms=move || stats.with(|s| ms(s.video_latency_p95_ms))
            data-audio-latency-p50-ms=move || stats.with(|s| ms(s.audio_latency_p50_ms))
            data-longest-freeze-ms=move || stats.with(|s| format!("{:.0}", s.longest_freeze_ms))
            // "ended:ms" per freeze, `performance.now()` ms: a test picks
            // out the freeze that followed an event.
            data-freezes=move || stats.with(|s| {
                s.freezes
                    .iter()
                    .map(|f| format!("{:.0}:{:.0}", f.ended_at_ms, f.ms))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        >
            <canvas id=peer.canvas_id() width="640" height="360" role="img" aria-label=format!("Video of {}", peer.name)></canvas>
            <span class="initials" aria-hidden="true">{initials(&peer.name)}</span>
            <figcaption>
                {format!("{} · {}", peer.name, peer.region)}
                {move || muted().then(|| view! { <span class="state muted" title="Microphone muted">" · muted"</span> })}
                {move || camera_off().then(|| view! { <span class="state camera-off" title="Camera off">" · camera off"</span> })}
                {move || link_word().map(|(class, word)| view! { <span class=format!("link {class}")>{format!(" · {word}")}</span> })}
            </figcaption>
        </figure>
    }
}

fn initials(name: &str) -> String {
    name.split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .collect::<String>()
        .to_uppercase()
}

#[component]
fn Participants(state: CallState) -> impl IntoView {
    view! {
        <section class="panel" aria-labelledby="participants-title">
            <h2 id="participants-title">{move || format!("Participants ({})", state.peers.with(Vec::len) + 1)}</h2>
            <ul class="participants">
                <li>"You"{move || state.serving.get().map(|s| format!(" · {}", s.region))}</li>
                {move || state.peers.get().into_iter().map(|p| view! {
                    <li data-participant=p.peer_id.clone()>{format!("{} · {} ({})", p.name, p.region, p.relay_id)}</li>
                }).collect_view()}
            </ul>
        </section>
    }
}

#[component]
fn StatsPanel(state: CallState) -> impl IntoView {
    let ms = |v: Option<f64>| {
        v.map(|m| format!("{m:.0} ms"))
            .unwrap_or_else(|| "–".into())
    };
    view! {
        <section class="panel stats" aria-labelledby="stats-title">
            <h2 id="stats-title">"Statistics"</h2>
            <dl>
                {move || {
                    let s = state.sending.get();
                    view! {
                        <dt>"Sent"</dt>
                        <dd data-screen-frames-sent=s.screen_frames>{format!("{} video frames ({} keyframes), {} audio frames, {} screen frames, {:.0} kbit/s", s.video_frames, s.keyframes, s.audio_frames, s.screen_frames, s.up_kbps)}</dd>
                    }
                }}
                {move || {
                    let (delivered, pending) = state.reports.get();
                    view! {
                        <dt>"Election reports"</dt>
                        <dd data-reports-delivered=delivered>{format!("{delivered} delivered, {pending} waiting")}</dd>
                    }
                }}
                {move || state.peers.get().into_iter().map(|p| {
                    let stats = p.stats;
                    view! {
                        <dt>{p.name.clone()}</dt>
                        <dd>{move || stats.with(|s| format!(
                            "{} video / {} audio frames decoded; latency p50 {} p95 {} (audio p50 {}); longest freeze {:.0} ms; {:.0} kbit/s",
                            s.video_decoded, s.audio_decoded, ms(s.video_latency_p50_ms), ms(s.video_latency_p95_ms),
                            ms(s.audio_latency_p50_ms), s.longest_freeze_ms, s.kbps))}</dd>
                    }
                }).collect_view()}
            </dl>
        </section>
    }
}
