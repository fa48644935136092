//! `units`: a tool that converts a quantity between units.
//!
//! Input `{"value": 5, "from": "km", "to": "mi"}`, output
//! `{"value": 3.10686, "unit": "mi"}`. Length, mass and time by factor;
//! temperature (c, f, k) by formula. Units of different kinds do not
//! convert (`invalid-input`).

use serde_json::{Value, json};
use sovra_sdk::{Error, Tool, ToolInfo};

/// Each unit: its name, its kind, and how many base units (m, kg, s) one is.
const UNITS: &[(&str, &str, f64)] = &[
    ("mm", "length", 0.001),
    ("cm", "length", 0.01),
    ("m", "length", 1.0),
    ("km", "length", 1000.0),
    ("in", "length", 0.0254),
    ("ft", "length", 0.3048),
    ("yd", "length", 0.9144),
    ("mi", "length", 1609.344),
    ("g", "mass", 0.001),
    ("kg", "mass", 1.0),
    ("t", "mass", 1000.0),
    ("oz", "mass", 0.028_349_523_125),
    ("lb", "mass", 0.453_592_37),
    ("s", "time", 1.0),
    ("min", "time", 60.0),
    ("h", "time", 3600.0),
    ("day", "time", 86_400.0),
];

const TEMPERATURES: &[&str] = &["c", "f", "k"];

struct Units;

impl Tool for Units {
    fn describe() -> ToolInfo {
        let mut names: Vec<&str> = UNITS.iter().map(|(name, _, _)| *name).collect();
        names.extend(TEMPERATURES);
        ToolInfo {
            name: "units".into(),
            description: "Converts units: how many miles, km, meters, feet, kg, pounds, hours, minutes, degrees Celsius or Fahrenheit.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "value": {"type": "number"},
                    "from": {"enum": names},
                    "to": {"enum": names}
                },
                "required": ["value", "from", "to"],
                "additionalProperties": false
            })
            .to_string(),
        }
    }

    fn call(input: String) -> Result<String, Error> {
        let input: Value = serde_json::from_str(&input)
            .map_err(|e| Error::InvalidInput(format!("input is not JSON: {e}")))?;
        let value = input["value"]
            .as_f64()
            .ok_or_else(|| Error::InvalidInput("`value` must be a number".into()))?;
        let unit = |field: &str| {
            input[field]
                .as_str()
                .map(str::to_ascii_lowercase)
                .ok_or_else(|| Error::InvalidInput(format!("`{field}` must be a unit name")))
        };
        let (from, to) = (unit("from")?, unit("to")?);
        let converted = convert(value, &from, &to).map_err(Error::InvalidInput)?;
        Ok(json!({"value": converted, "unit": to}).to_string())
    }
}

/// `value` in `from`, expressed in `to`.
pub fn convert(value: f64, from: &str, to: &str) -> Result<f64, String> {
    if TEMPERATURES.contains(&from) && TEMPERATURES.contains(&to) {
        let kelvin = match from {
            "c" => value + 273.15,
            "f" => (value - 32.0) * 5.0 / 9.0 + 273.15,
            _ => value,
        };
        return Ok(match to {
            "c" => kelvin - 273.15,
            "f" => (kelvin - 273.15) * 9.0 / 5.0 + 32.0,
            _ => kelvin,
        });
    }
    let find = |name: &str| {
        UNITS
            .iter()
            .find(|(unit, _, _)| *unit == name)
            .ok_or_else(|| format!("unknown unit `{name}`"))
    };
    let (_, from_kind, from_factor) = find(from)?;
    let (_, to_kind, to_factor) = find(to)?;
    if from_kind != to_kind {
        return Err(format!("cannot convert {from_kind} (`{from}`) to {to_kind} (`{to}`)"));
    }
    Ok(value * from_factor / to_factor)
}

sovra_sdk::export_tool!(Units);
