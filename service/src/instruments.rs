//! Observable OpenTelemetry instruments declared as data, for every
//! component's counters.
//!
//! A component keeps plain atomics (cheap on its hot path, served as JSON
//! too) and declares each instrument once: name, unit, description, and its
//! series (an attribute and how to read the value). [`register`] makes the
//! instruments; their callbacks read the source
//! only when the metrics are scraped or exported. The source is held weakly:
//! a component that has stopped (in a process that ran more than one)
//! reports nothing rather than being kept alive by its metrics.

use std::sync::Weak;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Meter};

/// An attribute that tells one series of an instrument from the others.
pub type Attr = Option<(&'static str, &'static str)>;

/// One series of an instrument: its attribute and how to read it from `S`.
pub type Series<S, T> = (Attr, fn(&S) -> T);

/// An instrument over a source `S`.
pub struct Instrument<S: 'static, T: 'static> {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    pub series: &'static [Series<S, T>],
}

/// How an instrument's values are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (Prometheus `_total`).
    Counter,
    /// Goes up and down and sums across series (open connections).
    UpDownCounter,
    /// A reading that does not sum (readiness, lag).
    Gauge,
}

/// A series ready for a callback: its attributes and how to read it.
type Observation<S, T> = (Vec<KeyValue>, fn(&S) -> T);

/// Every series with the attributes all of them carry, plus its own.
fn observations<S, T>(
    instrument: &Instrument<S, T>,
    common: &[KeyValue],
) -> Vec<Observation<S, T>> {
    instrument
        .series
        .iter()
        .map(|&(attr, read)| {
            let mut attrs = common.to_vec();
            if let Some((key, value)) = attr {
                attrs.push(KeyValue::new(key, value));
            }
            (attrs, read)
        })
        .collect()
}

/// The values instruments carry, and which instrument each kind becomes.
pub trait Value: Copy + Send + Sync + 'static {
    /// Builds the instrument `name` of `kind` whose callback is `observe`.
    fn build(
        meter: &Meter,
        kind: Kind,
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        observe: impl Fn(&dyn AsyncInstrument<Self>) + Send + Sync + 'static,
    );
}

/// `impl Value` for a value type: the meter method that builds each kind
/// it supports (a counter only goes up, so it is u64; an up-down counter goes
/// down, so it is i64).
macro_rules! value {
    ($type:ty { $($kind:ident => $method:ident),+ }) => {
        impl Value for $type {
            fn build(
                meter: &Meter,
                kind: Kind,
                name: &'static str,
                unit: &'static str,
                description: &'static str,
                observe: impl Fn(&dyn AsyncInstrument<Self>) + Send + Sync + 'static,
            ) {
                match kind {
                    $(Kind::$kind => drop(
                        meter
                            .$method(name)
                            .with_unit(unit)
                            .with_description(description)
                            .with_callback(observe)
                            .build(),
                    ),)+
                    other => panic!("{name}: there is no {other:?} of {}", stringify!($type)),
                }
            }
        }
    };
}

value!(u64 { Counter => u64_observable_counter, Gauge => u64_observable_gauge });
value!(i64 { UpDownCounter => i64_observable_up_down_counter, Gauge => i64_observable_gauge });

/// Registers `instruments` of `kind` over `source`; every series carries
/// the `common` attributes (the component's identity) and its own.
pub fn register<S: Send + Sync + 'static, T: Value>(
    meter: &Meter,
    kind: Kind,
    source: &Weak<S>,
    common: &[KeyValue],
    instruments: &'static [Instrument<S, T>],
) {
    for instrument in instruments {
        let (source, series) = (source.clone(), observations(instrument, common));
        T::build(
            meter,
            kind,
            instrument.name,
            instrument.unit,
            instrument.description,
            move |o| {
                if let Some(source) = source.upgrade() {
                    series
                        .iter()
                        .for_each(|(attrs, read)| o.observe(read(&source), attrs));
                }
            },
        );
    }
}
