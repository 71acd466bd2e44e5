//! The views: the lobby, then the call (whose first moments are the
//! election view). Plain buttons, inputs and tables, so everything is
//! keyboard operable and labelled for screen readers.

mod call;
mod election;
mod lobby;

use std::rc::Rc;

use leptos::prelude::*;

use crate::call::Call;
use crate::params::PageParams;

/// Which screen is up.
#[derive(Clone)]
pub enum Screen {
    Lobby,
    Call(Rc<Call>),
}

#[component]
pub fn App() -> impl IntoView {
    let search = web_sys::window()
        .and_then(|w| w.location().search().ok())
        .unwrap_or_default();
    let params = PageParams::parse(&search);
    let owner = Owner::current().expect("the app is mounted under a reactive owner");
    let screen = RwSignal::new_local(Screen::Lobby);
    move || match screen.get() {
        Screen::Lobby => {
            view! { <lobby::Lobby params=params.clone() owner=owner.clone() screen /> }.into_any()
        }
        Screen::Call(call) => view! { <call::CallView call screen /> }.into_any(),
    }
}
