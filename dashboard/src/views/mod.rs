//! The views, rendered on the server with Leptos (no WebAssembly needed to
//! read a dashboard); each takes loaded data and returns the page's `<main>`.

pub mod capacity;
pub mod columns;
pub mod layout;
pub mod matrix;
pub mod outcomes;
pub mod overview;
pub mod sessions;
