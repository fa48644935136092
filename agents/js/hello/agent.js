// `hello-js`: greets whoever its input names (the JavaScript twin of `hello`).

export const handler = {
  handle(request) {
    const name = request.input.trim() || 'world';
    return { output: `Hello, ${name}!`, metadata: [] };
  },
};
