//! Exercises one capability or escape attempt per invocation. The input is
//! `command:argument`; host errors are returned unchanged so tests can check
//! their exact kind.

use sovra_sdk::inference::{self, NamedTensor, TensorType};
use sovra_sdk::sql::{self, Value};
use sovra_sdk::{Agent, Error, Request, Response, kv, log};

struct Probe;

fn run(command: &str, argument: &str) -> Result<String, Error> {
    match command {
        "read-file" => std::fs::read_to_string(argument)
            .map_err(|e| Error::NotFound(format!("read {argument}: {e}"))),
        "list-dir" => std::fs::read_dir(argument)
            .map(|entries| entries.count().to_string())
            .map_err(|e| Error::NotFound(format!("list {argument}: {e}"))),
        "write-file" => std::fs::write(argument, b"pwned")
            .map(|()| "written".to_owned())
            .map_err(|e| Error::AccessDenied(format!("write {argument}: {e}"))),
        "env" => Ok(std::env::vars()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join("\n")),
        "args" => Ok(std::env::args().collect::<Vec<_>>().join(" ")),
        "cwd" => std::env::current_dir()
            .map(|dir| dir.display().to_string())
            .map_err(|e| Error::NotFound(e.to_string())),
        "kv-get" => Ok(kv::get_string(argument)?.unwrap_or_else(|| "<none>".into())),
        "kv-set" => {
            let (key, value) = argument.split_once('=').unwrap_or((argument, ""));
            kv::set(key, value)?;
            Ok("ok".into())
        }
        "kv-list" => Ok(kv::list(argument)?.join(",")),
        "sql-exec" => Ok(sql::execute(argument, &[])?.to_string()),
        "sql-query" => {
            let rows = sql::query(argument, &[])?;
            Ok(rows
                .rows
                .iter()
                .map(|row| row.iter().map(render).collect::<Vec<_>>().join("|"))
                .collect::<Vec<_>>()
                .join("\n"))
        }
        "list-models" => Ok(inference::list_models()
            .into_iter()
            .map(|model| model.name)
            .collect::<Vec<_>>()
            .join(",")),
        "generate" => Ok(inference::complete(argument, "Hello").max_tokens(8).generate()?.text),
        "stream" => {
            let mut text = String::new();
            for piece in inference::complete(argument, "Hello").max_tokens(8).stream()? {
                text.push_str(&piece?);
            }
            Ok(text)
        }
        // Takes the first piece of a stream and drops the stream (cancels it).
        "first-token" => {
            let mut stream = inference::complete(argument, "Hello").max_tokens(32).stream()?;
            let first = stream.next().transpose()?.unwrap_or_default();
            drop(stream);
            Ok(first)
        }
        "embed" => Ok(inference::embed(argument, &["hello".to_owned()])?.len().to_string()),
        "tensor" => {
            let input = NamedTensor {
                name: "x".into(),
                shape: vec![2],
                element_type: TensorType::Float32,
                data: vec![0; 8],
            };
            Ok(inference::run_tensor(argument, &[input])?.len().to_string())
        }
        "tensor-info" => Ok(inference::list_models()
            .into_iter()
            .filter(|model| model.name == argument)
            .flat_map(|model| model.inputs.into_iter().chain(model.outputs))
            .map(|spec| format!("{}{:?}", spec.name, spec.shape))
            .collect::<Vec<_>>()
            .join(" ")),
        "classify" => {
            let pixels: Vec<f32> = argument
                .split(',')
                .map(|p| p.trim().parse().map_err(|_| Error::InvalidInput(format!("pixel `{p}`"))))
                .collect::<Result<_, _>>()?;
            let input = NamedTensor {
                name: "pixels".into(),
                shape: vec![1, pixels.len() as u32],
                element_type: TensorType::Float32,
                data: pixels.iter().flat_map(|p| p.to_le_bytes()).collect(),
            };
            let output = inference::run_tensor("digits", &[input])?;
            let probabilities: Vec<f32> = output[0]
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let best = (0..probabilities.len())
                .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
                .unwrap_or(0);
            Ok(best.to_string())
        }
        "classify-n" => {
            // `n` classifications of one image: the per-call cost of run-tensor.
            let n: u32 = argument
                .parse()
                .map_err(|_| Error::InvalidInput(format!("count `{argument}`")))?;
            let input = NamedTensor {
                name: "pixels".into(),
                shape: vec![1, 64],
                element_type: TensorType::Float32,
                data: (0..64).flat_map(|i| ((i % 17) as f32).to_le_bytes()).collect(),
            };
            let mut bytes = 0;
            for _ in 0..n {
                bytes += inference::run_tensor("digits", std::slice::from_ref(&input))?[0].data.len();
            }
            Ok(format!("{n} {bytes}"))
        }
        "json-schema" => Ok(inference::chat("smollm2")
            .user("Tell me about Ann, who is 31 years old.")
            .max_tokens(48)
            .json_schema(argument)
            .generate()?
            .text),
        "bad-sampling" => Ok(inference::complete(argument, "Hello")
            .max_tokens(0)
            .generate()?
            .text),
        "big-hostcall" => {
            // Passes 16 MiB to the host in one call.
            let value = vec![b'x'; 16 << 20];
            kv::set("big", &value)?;
            Ok("stored".into())
        }
        "panic" => panic!("probe panicked on purpose"),
        // Guest text the host must not pass on raw.
        "log" => {
            log::log(log::Level::Warn, argument, &[(argument, argument)]);
            Ok("logged".into())
        }
        "print" => {
            println!("{argument}");
            eprintln!("{argument}");
            Ok("printed".into())
        }
        "fail" => Err(Error::Internal(argument.to_owned())),
        // Asks the host for this many random bytes in one call.
        "random" => {
            let len = argument.parse().unwrap_or(0);
            Ok(wasip2::random::random::get_random_bytes(len).len().to_string())
        }
        // Opens this many clock pollables at once (resource handles).
        "handles" => {
            let count: usize = argument.parse().unwrap_or(0);
            let held: Vec<_> = (0..count)
                .map(|_| wasip2::clocks::monotonic_clock::subscribe_duration(1_000_000_000))
                .collect();
            Ok(held.len().to_string())
        }
        // Waits in the host (wasi:io/poll on a clock), running no code.
        "sleep" => {
            let ms = argument.parse().unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(format!("slept {ms}ms"))
        }
        _ => Err(Error::InvalidInput(format!("unknown probe `{command}`"))),
    }
}

fn render(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Integer(v) => v.to_string(),
        Value::Real(v) => v.to_string(),
        Value::Text(v) => v.clone(),
        Value::Blob(v) => format!("<{} bytes>", v.len()),
    }
}

impl Agent for Probe {
    fn handle(request: Request) -> Result<Response, Error> {
        let (command, argument) = request.input.split_once(':').unwrap_or((&request.input, ""));
        run(command, argument).map(Response::text)
    }
}

sovra_sdk::export_agent!(Probe);
