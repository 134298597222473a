// Node's amqplib as a peer in `make bench` (bench/amqplib_peer.py runs this).
//   node bench.js publish URL QUEUE N SIZE   -> {"rate": msgs/s, "cpu_us": per message}
//   node bench.js consume URL QUEUE N        -> the same, draining N pre-filled messages
// publish: a confirm channel with up to 1,000 unconfirmed publishes (each persistent, with a
// 32-character message id, JSON content type, mandatory: what Warren sends); consume:
// prefetch 100, each message acked on its own.
'use strict';
const amqp = require('amqplib');

const WINDOW = 1000;
const PREFETCH = 100;

function report(n, startNs, startCpu) {
  const seconds = Number(process.hrtime.bigint() - startNs) / 1e9;
  const cpu = process.cpuUsage(startCpu);
  const cpuUs = (cpu.user + cpu.system) / n;
  process.stdout.write(JSON.stringify({ rate: n / seconds, cpu_us: cpuUs }) + '\n');
}

async function publish(url, queue, n, size) {
  const conn = await amqp.connect(url);
  const ch = await conn.createConfirmChannel();
  const body = Buffer.alloc(size, 'x');
  // a 32-character id per message, as Warren's (a random 64-bit prefix and a counter)
  const prefix = require('crypto').randomBytes(8).toString('hex');
  const startNs = process.hrtime.bigint();
  const startCpu = process.cpuUsage();
  await new Promise((resolve, reject) => {
    let sent = 0;
    let inFlight = 0;
    let confirmed = 0;
    const pump = () => {
      while (inFlight < WINDOW && sent < n) {
        inFlight += 1;
        const options = {
          persistent: true, messageId: prefix + sent.toString(16).padStart(16, '0'), contentType: 'application/json',
          mandatory: true,
        };
        sent += 1;
        ch.publish('', queue, body, options, (err) => {
          if (err) { reject(err); return; }
          inFlight -= 1;
          confirmed += 1;
          if (confirmed === n) resolve(); else pump();
        });
      }
    };
    pump();
  });
  report(n, startNs, startCpu);
  await conn.close();
}

async function consume(url, queue, n) {
  const conn = await amqp.connect(url);
  const ch = await conn.createChannel();
  await ch.prefetch(PREFETCH);
  const startNs = process.hrtime.bigint();
  const startCpu = process.cpuUsage();
  await new Promise((resolve) => {
    let count = 0;
    ch.consume(queue, (msg) => {
      ch.ack(msg);
      count += 1;
      if (count === n) resolve();
    });
  });
  report(n, startNs, startCpu);
  await conn.close();
}

const [mode, url, queue, n, size] = process.argv.slice(2);
const run = mode === 'publish'
  ? publish(url, queue, Number(n), Number(size))
  : consume(url, queue, Number(n));
run.catch((err) => { console.error(err); process.exit(1); });
