//! Criterion micro-benchmarks of the hot paths (`cargo bench`): protocol parse and encode (and
//! the generator's `fast_msg` parse beside the full one),
//! room fan-out through each architecture's own code (`servers::bench`), latency histogram
//! record, and the coordinator's histogram merge (V2 serialise → deserialise → add, as agents'
//! histograms travel to the coordinator). Wall-clock figures for humans; the CI gate uses the
//! instruction counts of `chatbench gate deterministic` instead.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

use chatbench_protocol::{encode_msg, parse_client};
use chatbench_servers::{bench, Arch, ServerConfig};

fn protocol(c: &mut Criterion) {
    let text = bench::msg_text(17, 4242, 64);
    let mut g = c.benchmark_group("protocol");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_client_msg", |b| {
        b.iter(|| black_box(parse_client(black_box(&text)).is_ok()))
    });
    let body = "x".repeat(64);
    g.bench_function("encode_msg", |b| {
        b.iter(|| {
            encode_msg(
                black_box("r17"),
                "a3.c1042",
                88,
                123_456_789,
                black_box(&body),
            )
        })
    });
    // What a receiver reads: the full parser (as the profiles decode) against the engine's
    // fast path for the same frame.
    let server_text = encode_msg("r17", "a3.c1042", 88, 123_456_789, &body);
    g.bench_function("parse_server_msg", |b| {
        b.iter(|| black_box(chatbench_protocol::parse_server(black_box(&server_text)).is_ok()))
    });
    g.bench_function("fast_msg", |b| {
        b.iter(|| black_box(chatbench_loadgen::fast_msg::parse(black_box(&server_text)).is_some()))
    });
    g.finish();
}

fn fan_out(c: &mut Criterion) {
    let mut g = c.benchmark_group("fan_out_room_of_100");
    let texts = bench::msg_texts(100, 100, 64);
    g.throughput(Throughput::Elements(100 * 99));
    for arch in Arch::ALL {
        let Ok(mut w) = bench::fan_out(arch, ServerConfig::default(), 100) else {
            eprintln!("skipping {arch}: workload setup failed");
            continue;
        };
        g.bench_function(arch.as_str(), |b| {
            b.iter(|| w.run(black_box(&texts)).map(black_box).is_ok())
        });
    }
    g.finish();
}

fn histogram(c: &mut Criterion) {
    let mut g = c.benchmark_group("histogram");
    // A fixed pseudo-random sequence of latencies, 10 µs .. ~65 ms.
    let values: Vec<u64> = (0..1024u64)
        .map(|i| 10 + (i.wrapping_mul(2_654_435_761) % 65_536) * (1 + i % 16))
        .collect();
    g.throughput(Throughput::Elements(values.len() as u64));
    let mut h = chatbench_model::hist::new_hist();
    g.bench_function("record_1024", |b| {
        b.iter(|| {
            for &v in &values {
                chatbench_model::hist::record(&mut h, black_box(v));
            }
        })
    });
    g.finish();

    // The coordinator's merge: an agent's window histogram (100k deliveries) serialised, sent,
    // deserialised and added into the total.
    let mut agent = chatbench_model::hist::new_hist();
    for i in 0..100_000u64 {
        chatbench_model::hist::record(&mut agent, values[(i % 1024) as usize] + i % 97);
    }
    let mut g = c.benchmark_group("histogram_merge");
    g.throughput(Throughput::Elements(1));
    g.bench_function("serialize_deserialize_add", |b| {
        b.iter_batched(
            chatbench_model::hist::new_hist,
            |mut total| {
                let mut buf = Vec::new();
                let ok = V2Serializer::new().serialize(&agent, &mut buf).is_ok();
                let back: Result<hdrhistogram::Histogram<u64>, _> =
                    Deserializer::new().deserialize(&mut buf.as_slice());
                if let Ok(h) = back {
                    let _ = total.add(&h);
                }
                black_box((ok, total.len()))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The generator's per-delivery record: outside the window one histogram (the second's), in
/// the window three (the second's, the window's, and the window's second for `latency.hlog`).
fn stats_record(c: &mut Criterion) {
    let values: Vec<u64> = (0..1024u64)
        .map(|i| 10 + (i.wrapping_mul(2_654_435_761) % 65_536) * (1 + i % 16))
        .collect();
    let stats = chatbench_loadgen::stats::Stats::new(1);
    let mut g = c.benchmark_group("stats_record_latency");
    g.throughput(Throughput::Elements(values.len() as u64));
    for (name, in_window) in [("outside_window_1024", false), ("in_window_1024", true)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for (k, &v) in values.iter().enumerate() {
                    stats.record_latency(k as u32, black_box(v), in_window);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, protocol, fan_out, histogram, stats_record);
criterion_main!(benches);
