//! A tool plugin: describes itself and echoes its input back.

use sovra_sdk::{Error, Tool, ToolInfo};

struct Echo;

impl Tool for Echo {
    fn describe() -> ToolInfo {
        ToolInfo {
            name: "echo".into(),
            description: "Returns its input unchanged.".into(),
            input_schema: r#"{"type":"object"}"#.into(),
        }
    }

    fn call(input: String) -> Result<String, Error> {
        if input.trim().is_empty() {
            return Err(Error::InvalidInput("empty input".into()));
        }
        Ok(input)
    }
}

sovra_sdk::export_tool!(Echo);
