//! The hub's publish path, so regressions show in numbers: one event fanned out to a channel
//! with many subscribers (each receiver then takes it, as a connection would), and one event
//! to one of many single-subscriber channels. Run with `cargo bench -p courier-broadcaster`.

use std::hint::black_box;

use courier_broadcaster::hub::Hub;
use courier_core::channel::Channel;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const EVENT: &str = r#"{"id":"0192f3a4-7b6c-7d8e-9f00-112233445566","type":"products.created","collection":"products","doc_id":"abc","data":{"nombre":"Camiseta","precio":25.99,"talla":"M"},"actor":null,"time":"2026-01-01T00:00:00.000Z","trace_id":"t"}"#;

fn one_channel_many_subscribers(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_to_one_channel");
    for subscribers in [1usize, 100, 2_000] {
        let hub = Hub::new(1024);
        let channel = Channel::parse("products:abc").unwrap();
        let mut receivers: Vec<_> = (0..subscribers)
            .map(|_| hub.subscribe(&channel).expect("no channel limit").receiver)
            .collect();
        let mut seq = 0;
        let mut scratch = Vec::with_capacity(8);
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(BenchmarkId::from_parameter(subscribers), &subscribers, |b, _| {
            b.iter(|| {
                seq += 1;
                black_box(hub.publish("events.products.abc.created", seq, EVENT, None));
                for receiver in &mut receivers {
                    scratch.clear();
                    black_box(receiver.try_recv_many(&mut scratch, 8).unwrap());
                }
            })
        });
    }
    group.finish();
}

fn many_channels_one_subscriber_each(c: &mut Criterion) {
    let hub = Hub::new(1024);
    let channels = 10_000;
    let mut receivers: Vec<_> = (0..channels)
        .map(|i| {
            hub.subscribe(&Channel::parse(&format!("products:d{i}")).unwrap())
                .expect("no channel limit")
                .receiver
        })
        .collect();
    let subjects: Vec<String> =
        (0..channels).map(|i| format!("events.products.d{i}.created")).collect();
    let mut seq = 0u64;
    let mut scratch = Vec::with_capacity(8);
    c.bench_function("publish_to_one_of_10k_channels", |b| {
        b.iter(|| {
            seq += 1;
            let i = (seq as usize) % channels;
            black_box(hub.publish(&subjects[i], seq, EVENT, None));
            scratch.clear();
            black_box(receivers[i].try_recv_many(&mut scratch, 8).unwrap());
        })
    });
}

criterion_group!(benches, one_channel_many_subscribers, many_channels_one_subscriber_each);
criterion_main!(benches);
