//! Chat prompts rendered with the model's own `tokenizer.chat_template`
//! (Jinja), as the model was trained to see them.

use minijinja::{Environment, ErrorKind, context};

use crate::{ChatMessage, InferenceError, Role};

/// Longest template accepted.
/// Stops: pathological templates from model files.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// Template instructions one render may run (a chat of hundreds of
/// messages takes tens of thousands).
/// Stops: a template that loops for ever or for billions of steps (its
/// loops are data-driven, and `range` is long) holding an engine thread.
pub const MAX_TEMPLATE_FUEL: u64 = 5_000_000;

/// Longest prompt a render may write.
/// Stops: a template that multiplies its output into gigabytes.
pub const MAX_RENDERED_BYTES: usize = 8 * 1024 * 1024;

/// Most items a sequence or map written into the prompt may hold.
/// Stops: `{{ [0] * 10**15 }}` (a repeated list is lazy and costs no fuel
/// to build) iterating for ever while it is written out.
pub const MAX_WRITTEN_ITEMS: usize = 100_000;

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compiles `source`; `bos` and `eos` are the token texts templates may use.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, InferenceError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(InferenceError::InvalidInput(format!(
                "chat template is {} bytes; the limit is {MAX_TEMPLATE_BYTES}",
                source.len()
            )));
        }
        let mut env = Environment::new();
        env.set_fuel(Some(MAX_TEMPLATE_FUEL));
        env.set_formatter(|out, state, value| {
            if value.len().is_some_and(|items| items > MAX_WRITTEN_ITEMS) {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("a value of more than {MAX_WRITTEN_ITEMS} items is written out"),
                ));
            }
            minijinja::escape_formatter(out, state, value)
        });
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| {
                InferenceError::Internal(format!("the model's chat template does not compile: {e}"))
            })?;
        Ok(ChatTemplate {
            env,
            bos: bos.to_owned(),
            eos: eos.to_owned(),
        })
    }

    /// The prompt text for `messages`, ending where the assistant's turn begins.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, InferenceError> {
        let messages: Vec<_> = messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                context! { role => role, content => m.content }
            })
            .collect();
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| InferenceError::Internal(e.to_string()))?;
        let mut prompt = BoundedText::default();
        template
            .render_captured_to(
                context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => self.bos,
                    eos_token => self.eos,
                },
                &mut prompt,
            )
            .map_err(|e| {
                InferenceError::InvalidInput(format!("cannot render the chat prompt: {e}"))
            })?;
        String::from_utf8(prompt.bytes).map_err(|_| {
            InferenceError::InvalidInput(
                "the chat template rendered bytes that are not UTF-8".into(),
            )
        })
    }
}

/// The rendered prompt, refusing to grow past [`MAX_RENDERED_BYTES`].
#[derive(Default)]
struct BoundedText {
    bytes: Vec<u8>,
}

impl std::io::Write for BoundedText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other(format!(
                "the rendered prompt would pass {MAX_RENDERED_BYTES} bytes"
            )));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_a_default_system_turn() {
        let template = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let text = template
            .render(&[ChatMessage {
                role: Role::User,
                content: " Hi ".into(),
            }])
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn template_errors_are_reported() {
        let template =
            ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        let err = template.render(&[]).unwrap_err();
        assert!(err.to_string().contains("roles must alternate"), "{err}");
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }

    /// A template from a hostile model file: endless loops and output bombs
    /// end with an error, quickly, and the next render works. (A string
    /// doubled by `~` in a short loop is not bounded: minijinja limits
    /// repetition, not concatenation.)
    #[test]
    fn runaway_templates_are_stopped() {
        let message = [ChatMessage {
            role: Role::User,
            content: "x".repeat(1000),
        }];
        for source in [
            // Billions of steps.
            "{% for a in range(100000) %}{% for b in range(100000) %}.{% endfor %}{% endfor %}",
            // A list repeated a quadrillion times, written out (found by
            // the chat_template fuzz target).
            "{{ [ 0>4]*04444444444444444 }}",
            // A thousand copies of each message, a thousand times over.
            "{% for a in range(1000) %}{% for b in range(1000) %}{{ messages[0].content }}{% endfor %}{% endfor %}",
        ] {
            let started = std::time::Instant::now();
            let template = ChatTemplate::new(source, "", "").unwrap();
            let error = template.render(&message).unwrap_err().to_string();
            assert!(error.contains("cannot render"), "{source}: {error}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{source} took {:?}",
                started.elapsed()
            );
        }
        let template = ChatTemplate::new(CHATML, "", "").unwrap();
        assert!(template.render(&message).is_ok());
    }
}
