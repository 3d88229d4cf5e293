// A single-page app: every page renders in the browser (wrenn-cp serves
// index.html for any path the API does not own).
export const ssr = false;
export const prerender = false;
