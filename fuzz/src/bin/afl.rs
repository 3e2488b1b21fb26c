//! The AFL++ driver: `chatbench-fuzz TARGET` runs one target of [`chatbench_fuzz::TARGETS`] in
//! AFL's persistent mode. Built and run by `scripts/fuzz.sh` (`cargo afl build --features afl`).

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = chatbench_fuzz::target(&name) else {
        eprintln!(
            "usage: chatbench-fuzz TARGET (one of: {})",
            chatbench_fuzz::names().join(", ")
        );
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        target(data);
    });
}
