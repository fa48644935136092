//! `calculator`: a tool that evaluates arithmetic.
//!
//! Input `{"expression": "2 * (3 + 4) ^ 2"}`, output `{"result": 98}`.
//! Numbers are decimals; `^` is power (right-associative), unary minus binds
//! tighter than the binary operators. Division by zero and results that are
//! not finite are `invalid-input`.

use serde_json::{Value, json};
use sovra_sdk::{Error, Tool, ToolInfo};

/// Longest expression accepted.
const MAX_EXPRESSION: usize = 1024;
/// Deepest nesting of parentheses and unary minus.
const MAX_DEPTH: usize = 64;

struct Calculator;

impl Tool for Calculator {
    fn describe() -> ToolInfo {
        ToolInfo {
            name: "calculator".into(),
            description: "Calculates arithmetic: adds, subtracts, multiplies (times), divides, powers of numbers.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "expression": {"type": "string", "maxLength": MAX_EXPRESSION}
                },
                "required": ["expression"],
                "additionalProperties": false
            })
            .to_string(),
        }
    }

    fn call(input: String) -> Result<String, Error> {
        let input: Value = serde_json::from_str(&input)
            .map_err(|e| Error::InvalidInput(format!("input is not JSON: {e}")))?;
        let expression = input["expression"]
            .as_str()
            .ok_or_else(|| Error::InvalidInput("`expression` must be a string".into()))?;
        let result = evaluate(expression).map_err(Error::InvalidInput)?;
        Ok(json!({"result": result}).to_string())
    }
}

/// The value of `expression`.
pub fn evaluate(expression: &str) -> Result<f64, String> {
    if expression.len() > MAX_EXPRESSION {
        return Err(format!("the expression is longer than {MAX_EXPRESSION} bytes"));
    }
    let mut parser = Parser {
        text: expression.as_bytes(),
        at: 0,
        depth: 0,
    };
    let value = parser.sum()?;
    parser.skip_spaces();
    if parser.at != parser.text.len() {
        return Err(format!("unexpected `{}` at {}", parser.rest(), parser.at));
    }
    if !value.is_finite() {
        return Err("the result is not a finite number".into());
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn skip_spaces(&mut self) {
        while self.text.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_spaces();
        self.text.get(self.at).copied()
    }

    fn rest(&self) -> String {
        String::from_utf8_lossy(&self.text[self.at..]).chars().take(8).collect()
    }

    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("the expression nests deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    /// sum := product (("+" | "-") product)*
    fn sum(&mut self) -> Result<f64, String> {
        let mut value = self.product()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.at += 1;
            let right = self.product()?;
            value = if op == b'+' { value + right } else { value - right };
        }
        Ok(value)
    }

    /// product := power (("*" | "/") power)*
    fn product(&mut self) -> Result<f64, String> {
        let mut value = self.power()?;
        while let Some(op @ (b'*' | b'/')) = self.peek() {
            self.at += 1;
            let right = self.power()?;
            if op == b'/' && right == 0.0 {
                return Err("division by zero".into());
            }
            value = if op == b'*' { value * right } else { value / right };
        }
        Ok(value)
    }

    /// power := unary ("^" power)?
    fn power(&mut self) -> Result<f64, String> {
        let base = self.unary()?;
        if self.peek() == Some(b'^') {
            self.at += 1;
            self.deeper()?;
            let exponent = self.power()?;
            self.depth -= 1;
            return Ok(base.powf(exponent));
        }
        Ok(base)
    }

    /// unary := "-" unary | atom
    fn unary(&mut self) -> Result<f64, String> {
        if self.peek() == Some(b'-') {
            self.at += 1;
            self.deeper()?;
            let value = self.unary()?;
            self.depth -= 1;
            return Ok(-value);
        }
        self.atom()
    }

    /// atom := number | "(" sum ")"
    fn atom(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some(b'(') => {
                self.at += 1;
                self.deeper()?;
                let value = self.sum()?;
                self.depth -= 1;
                if self.peek() != Some(b')') {
                    return Err(format!("missing `)` at {}", self.at));
                }
                self.at += 1;
                Ok(value)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.at;
                while self
                    .text
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
                {
                    self.at += 1;
                }
                let number = std::str::from_utf8(&self.text[start..self.at]).unwrap_or("");
                number.parse().map_err(|_| format!("`{number}` is not a number"))
            }
            Some(_) => Err(format!("unexpected `{}` at {}", self.rest(), self.at)),
            None => Err("the expression ends too early".into()),
        }
    }
}

sovra_sdk::export_tool!(Calculator);
