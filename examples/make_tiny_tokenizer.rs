//! Regenerates assets/tiny/tokenizer.json from assets/tiny/corpus.txt:
//! `cargo run --release --example make_tiny_tokenizer`. Deterministic; a test checks
//! that the committed file equals what this produces.

use actial::model::tiny::{TINY_VOCAB, tiny_dir};
use actial::model::tokenizer::train_qwen_style_bpe;

fn main() -> actial::Result<()> {
    let corpus = std::fs::read_to_string(tiny_dir().join("corpus.txt"))
        .map_err(|e| actial::Error::Io { path: "assets/tiny/corpus.txt".into(), source: e })?;
    let lines: Vec<&str> = corpus.lines().collect();
    let tok = train_qwen_style_bpe(&lines, TINY_VOCAB)?;
    let out = tiny_dir().join("tokenizer.json");
    let json = tok.to_string(true).map_err(|e| actial::arg_err!("make_tiny_tokenizer", "{e}"))?;
    actial::model::weights::write_atomic(&out, json.as_bytes())?;
    println!("wrote {} ({} tokens)", out.display(), tok.get_vocab_size(true));
    Ok(())
}
