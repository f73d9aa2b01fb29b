//! Metering: reading token usage out of provider responses as they stream by, and
//! pricing it.
//!
//! - Chat Completions: the `usage` object (of the body, or of the final chunk when
//!   streaming — the proxy asks for it with `stream_options.include_usage`).
//! - Responses: `usage` of the body, or `response.usage` of the
//!   `response.completed` (or `.incomplete` / `.failed`) event.
//! - Messages: `usage` of the body, or `message_start`'s `message.usage` (input)
//!   and `message_delta`'s cumulative `usage.output_tokens`.
//!
//! Input tokens include cache reads and writes where the provider counts them
//! separately (Anthropic).

use std::collections::BTreeMap;

use serde_json::Value;

use super::api::Api;
use crate::config::ModelPrice;

/// Most bytes of a non-streaming response kept to read its usage from.
const MAX_JSON_BODY: usize = 16 << 20;
/// Longest SSE line kept while waiting for its end.
const MAX_SSE_LINE: usize = 16 << 20;

/// Tokens one upstream call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
}

/// Reads usage from a response body fed to it chunk by chunk.
#[derive(Debug)]
pub struct Meter {
    api: Api,
    sse: bool,
    buf: Vec<u8>,
    overflow: bool,
    tokens: Option<Tokens>,
}

fn number(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Anthropic's input count: uncached input plus cache writes and reads.
fn anthropic_input(usage: &Value) -> u64 {
    number(usage, "input_tokens")
        + number(usage, "cache_creation_input_tokens")
        + number(usage, "cache_read_input_tokens")
}

impl Meter {
    /// A meter for a response of `api`; `sse` when it is an event stream.
    pub fn new(api: Api, sse: bool) -> Self {
        Self {
            api,
            sse,
            buf: Vec::new(),
            overflow: false,
            tokens: None,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.overflow {
            return;
        }
        self.buf.extend_from_slice(chunk);
        if !self.sse {
            if self.buf.len() > MAX_JSON_BODY {
                self.overflow = true;
                self.buf = Vec::new();
            }
            return;
        }
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            self.line(&line);
        }
        if self.buf.len() > MAX_SSE_LINE {
            self.buf.clear();
        }
    }

    fn line(&mut self, line: &[u8]) {
        let Ok(line) = std::str::from_utf8(line) else {
            return;
        };
        let Some(data) = line.trim_end().strip_prefix("data:") else {
            return;
        };
        let data = data.trim_start();
        if data.is_empty() || data == "[DONE]" {
            return;
        }
        if let Ok(event) = serde_json::from_str::<Value>(data) {
            self.event(&event);
        }
    }

    /// One streamed event.
    fn event(&mut self, event: &Value) {
        match self.api {
            Api::ChatCompletions => self.body(event),
            Api::Responses => {
                let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
                if matches!(
                    kind,
                    "response.completed" | "response.incomplete" | "response.failed"
                ) && let Some(usage) = event.get("response").and_then(|r| r.get("usage"))
                    && usage.is_object()
                {
                    self.tokens = Some(Tokens {
                        input: number(usage, "input_tokens"),
                        output: number(usage, "output_tokens"),
                    });
                }
            }
            Api::Messages => {
                let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
                let tokens = self.tokens.get_or_insert_with(Tokens::default);
                match kind {
                    "message_start" => {
                        if let Some(usage) = event.get("message").and_then(|m| m.get("usage")) {
                            tokens.input = anthropic_input(usage);
                            tokens.output = number(usage, "output_tokens");
                        }
                    }
                    "message_delta" => {
                        if let Some(usage) = event.get("usage") {
                            // Cumulative counts; input appears here only sometimes.
                            tokens.output = number(usage, "output_tokens").max(tokens.output);
                            let input = anthropic_input(usage);
                            if input > 0 {
                                tokens.input = input;
                            }
                        }
                    }
                    _ => {}
                }
            }
            Api::CountTokens => {}
        }
    }

    /// A whole (non-streamed) response body, or a Chat Completions chunk.
    fn body(&mut self, body: &Value) {
        let Some(usage) = body.get("usage").filter(|u| u.is_object()) else {
            return;
        };
        self.tokens = Some(match self.api {
            Api::ChatCompletions => Tokens {
                input: number(usage, "prompt_tokens"),
                output: number(usage, "completion_tokens"),
            },
            Api::Responses => Tokens {
                input: number(usage, "input_tokens"),
                output: number(usage, "output_tokens"),
            },
            Api::Messages => Tokens {
                input: anthropic_input(usage),
                output: number(usage, "output_tokens"),
            },
            Api::CountTokens => return,
        });
    }

    /// The usage seen, once the body ended (or was cut off).
    pub fn finish(mut self) -> Option<Tokens> {
        if self.api == Api::CountTokens {
            return None;
        }
        if self.sse {
            if !self.buf.is_empty() {
                let rest = std::mem::take(&mut self.buf);
                self.line(&rest);
            }
        } else if !self.overflow
            && let Ok(body) = serde_json::from_slice::<Value>(&self.buf)
        {
            self.body(&body);
        }
        self.tokens.filter(|t| t.input > 0 || t.output > 0)
    }
}

/// The cost of `tokens` on `model` in millionths of a US dollar (rounded up), by
/// the price of `model`, else of `*`, else 0.
pub fn price(prices: &BTreeMap<String, ModelPrice>, model: &str, tokens: Tokens) -> u64 {
    let Some(price) = prices.get(model).or_else(|| prices.get("*")) else {
        return 0;
    };
    let micro = u128::from(tokens.input) * u128::from(price.input_micro_usd_per_mtok)
        + u128::from(tokens.output) * u128::from(price.output_micro_usd_per_mtok);
    u64::try_from(micro.div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metered(api: Api, sse: bool, chunks: &[&str]) -> Option<Tokens> {
        let mut meter = Meter::new(api, sse);
        for chunk in chunks {
            meter.feed(chunk.as_bytes());
        }
        meter.finish()
    }

    #[test]
    fn chat_usage_from_the_body_and_the_final_chunk() {
        let body = r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5}}"#;
        assert_eq!(
            metered(Api::ChatCompletions, false, &[&body[..10], &body[10..]]),
            Some(Tokens {
                input: 12,
                output: 5
            })
        );
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
        let (a, b) = stream.split_at(30);
        assert_eq!(
            metered(Api::ChatCompletions, true, &[a, b]),
            Some(Tokens {
                input: 7,
                output: 3
            })
        );
    }

    #[test]
    fn responses_usage_from_the_completed_event() {
        let stream = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{}}\n\n\
            event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":40,\"output_tokens\":9}}}\n\n";
        assert_eq!(
            metered(Api::Responses, true, &[stream]),
            Some(Tokens {
                input: 40,
                output: 9
            })
        );
    }

    #[test]
    fn messages_usage_from_start_and_delta() {
        let stream = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":20,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\r\n\r\n\
            event: message_delta\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":14}}\r\n\r\n";
        assert_eq!(
            metered(Api::Messages, true, &[stream]),
            Some(Tokens {
                input: 25,
                output: 14
            })
        );
        assert_eq!(
            metered(Api::CountTokens, false, &["{\"input_tokens\":3}"]),
            None
        );
    }

    #[test]
    fn prices_round_up_and_fall_back_to_the_wildcard() {
        let prices = BTreeMap::from([
            (
                "m".to_owned(),
                ModelPrice {
                    input_micro_usd_per_mtok: 3_000_000,
                    output_micro_usd_per_mtok: 15_000_000,
                },
            ),
            (
                "*".to_owned(),
                ModelPrice {
                    input_micro_usd_per_mtok: 1,
                    output_micro_usd_per_mtok: 0,
                },
            ),
        ]);
        let tokens = Tokens {
            input: 1000,
            output: 100,
        };
        assert_eq!(price(&prices, "m", tokens), 4_500);
        assert_eq!(price(&prices, "other", tokens), 1);
        assert_eq!(price(&BTreeMap::new(), "m", tokens), 0);
    }
}
