'use strict';
// aworker's Service-Worker-style API (`runtime: "aworker"`, `sourceFile: "main.js"`).
//
// The 'install' listener is the initializer: its waitUntil() promises settle before the first
// request. Each request is a FetchEvent: `event.request` is a standard Request whose body streams
// in as it is read; respondWith() takes a Response (or a promise of one), whose body is streamed
// to the client chunk by chunk. With `?stream` the answer is produced slowly, in three chunks.
let greeting = null;

addEventListener('install', (event) => {
  event.waitUntil((async () => {
    await new Promise((resolve) => setTimeout(resolve, 50)); // stands in for real set-up work
    greeting = 'hello from aworker';
  })());
});

addEventListener('fetch', (event) => {
  event.respondWith(handle(event.request));
});

async function handle(request) {
  const url = new URL(request.url);
  if (url.searchParams.has('stream')) {
    let n = 0;
    const body = new ReadableStream({
      async pull(controller) {
        n += 1;
        await new Promise((resolve) => setTimeout(resolve, 200));
        controller.enqueue(new TextEncoder().encode(`chunk ${n} of 3\n`));
        if (n === 3) controller.close();
      },
    });
    return new Response(body, { headers: { 'content-type': 'text/plain; charset=utf-8' } });
  }
  const body = request.body === null ? '' : await request.text();
  return Response.json({ greeting, method: request.method, url: request.url, body });
}
