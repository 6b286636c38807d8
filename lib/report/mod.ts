/**
 * Results as people read them: SVG charts, accuracy and rank tables, the run report. May
 * import the layers below (engine/ to eval/).
 * @module
 */
export * from "./svg.ts";
export * from "./accuracy.ts";
export * from "./rank.ts";
export * from "./report.ts";
