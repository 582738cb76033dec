//! Experiment parameters a researcher can change without editing code.
//!
//! Each experiment module declares `pub struct Params` (flat serde fields), `impl Default` (the
//! documented defaults), `pub const PARAM_SPECS` = (field, unit, where the default comes from) and
//! `pub fn run_with(mode, seed, &Params)`. [`ParamsDef`] erases the type so the runner can list
//! the parameters (`experiment describe`), apply `--set key=value` through serde, record the values
//! used in result.json / run.json and re-run with them (`experiment replay`).

use crate::outcome::{ExperimentOutput, Mode};
use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// (field, unit, source of the default).
pub type Specs = &'static [(&'static str, &'static str, &'static str)];

/// One experiment's parameters, type-erased to JSON objects.
#[derive(Clone, Copy)]
pub struct ParamsDef {
    pub specs: Specs,
    /// The defaults in `mode` (most experiments have one set for both modes).
    pub defaults: fn(Mode) -> Value,
    /// Deserializes the values (a JSON object of every field); Err = a bad value.
    pub check: fn(&Value) -> anyhow::Result<()>,
    /// Runs with the values (a JSON object of every field).
    pub run: fn(Mode, u64, &Value) -> anyhow::Result<ExperimentOutput>,
}

/// Builds the [`ParamsDef`] of an experiment module that follows the shared design
/// (`Params`, `PARAM_SPECS`, `run_with`).
#[macro_export]
macro_rules! params_def {
    ($($m:ident)::+) => {
        $crate::params::ParamsDef {
            specs: $($m)::+::PARAM_SPECS,
            defaults: |_mode| {
                serde_json::to_value($($m)::+::Params::default())
                    .expect("plain parameters serialize")
            },
            check: |v| {
                serde_json::from_value::<$($m)::+::Params>(v.clone())
                    .map(|_| ())
                    .map_err(Into::into)
            },
            run: |mode, seed, v| {
                let p: $($m)::+::Params = serde_json::from_value(v.clone())?;
                $($m)::+::run_with(mode, seed, &p)
            },
        }
    };
}

/// One parameter as result.json records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamRecord {
    pub name: String,
    pub value: Value,
    #[serde(default)]
    pub default: Value,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub source: String,
}

impl ParamsDef {
    /// Field names in declaration order of the specs.
    pub fn names(&self) -> Vec<&'static str> {
        self.specs.iter().map(|s| s.0).collect()
    }

    /// The defaults with each `key=value` applied, checked. A value is read as JSON (numbers,
    /// booleans, `[1,2,3]`, `"text"`); a string parameter also takes bare text.
    pub fn apply(&self, mode: Mode, sets: &[String]) -> anyhow::Result<Value> {
        let mut values = (self.defaults)(mode);
        for set in sets {
            let (key, raw) = set
                .split_once('=')
                .ok_or_else(|| anyhow!("--set '{set}': expected key=value"))?;
            let key = key.trim();
            self.set(&mut values, key, raw.trim())?;
        }
        Ok(values)
    }

    /// Sets one field of `values` from its text, checked.
    pub fn set(&self, values: &mut Value, key: &str, raw: &str) -> anyhow::Result<()> {
        let obj = object_mut(values)?;
        let Some(old) = obj.get(key).cloned() else {
            bail!(
                "unknown parameter '{key}' (known: {})",
                self.names().join(", ")
            );
        };
        let parsed = match serde_json::from_str::<Value>(raw) {
            Ok(Value::String(s)) => Value::String(s),
            // Text for a string field (or an optional one, null by default) needs no quotes.
            _ if old.is_string() => Value::String(raw.to_string()),
            Ok(v) => v,
            Err(_) if old.is_null() => Value::String(raw.to_string()),
            Err(_) => bail!("parameter '{key}': '{raw}' is not a value (expected like {old})"),
        };
        obj.insert(key.to_string(), parsed);
        (self.check)(values).map_err(|e| {
            anyhow!(
                "parameter '{key}': bad value '{raw}' (expected like {old}): {}",
                one_line(&e)
            )
        })
    }

    /// What result.json records: every parameter with its value, default, unit and source.
    pub fn records(&self, mode: Mode, values: &Value) -> Vec<ParamRecord> {
        let defaults = (self.defaults)(mode);
        self.specs
            .iter()
            .map(|&(name, unit, source)| ParamRecord {
                name: name.into(),
                value: values.get(name).cloned().unwrap_or(Value::Null),
                default: defaults.get(name).cloned().unwrap_or(Value::Null),
                unit: unit.into(),
                source: source.into(),
            })
            .collect()
    }

    /// The values of recorded parameters (a replay): each must name a field of this experiment.
    pub fn from_records(&self, mode: Mode, records: &[ParamRecord]) -> anyhow::Result<Value> {
        let mut values = (self.defaults)(mode);
        let obj = object_mut(&mut values)?;
        for r in records {
            anyhow::ensure!(
                obj.contains_key(&r.name),
                "recorded parameter '{}' is not a parameter of this experiment",
                r.name
            );
            obj.insert(r.name.clone(), r.value.clone());
        }
        (self.check)(&values).context("recorded parameters")?;
        Ok(values)
    }

    /// Every field of `Params` must have a spec and every spec a field (checked by the tests).
    pub fn spec_mismatch(&self) -> Option<String> {
        let defaults = (self.defaults)(Mode::Sim);
        let fields: Vec<&String> = defaults.as_object()?.keys().collect();
        let names = self.names();
        let missing: Vec<_> = fields
            .iter()
            .filter(|f| !names.contains(&f.as_str()))
            .collect();
        let extra: Vec<_> = names
            .iter()
            .filter(|n| !fields.iter().any(|f| f == *n))
            .collect();
        (!missing.is_empty() || !extra.is_empty()).then(|| {
            format!("fields without a spec: {missing:?}; specs without a field: {extra:?}")
        })
    }
}

fn object_mut(values: &mut Value) -> anyhow::Result<&mut Map<String, Value>> {
    values
        .as_object_mut()
        .ok_or_else(|| anyhow!("parameters are not a flat record"))
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// A `Duration` parameter written as seconds (f64) in `--set`, result.json and run.json:
/// `#[serde(with = "crate::params::seconds")]`. Refuses negative, NaN and infinite values and
/// anything over a day of simulated time.
pub mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        if !(v.is_finite() && (0.0..=86_400.0).contains(&v)) {
            return Err(serde::de::Error::custom(format!(
                "{v} s: expected a number of seconds in 0..=86400"
            )));
        }
        Ok(Duration::from_secs_f64(v))
    }
}
