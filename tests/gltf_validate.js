// Validate a glTF / GLB file with the Khronos glTF Validator; prints the report's issues as JSON.
// usage: node gltf_validate.js NODE_PREFIX FILE
const fs = require('fs');
const path = require('path');
const validator = require(path.join(process.argv[2], 'node_modules', 'gltf-validator'));
const file = process.argv[3];
const data = new Uint8Array(fs.readFileSync(file));
validator.validateBytes(data, {uri: path.basename(file), maxIssues: 200}).then((report) => {
  process.stdout.write(JSON.stringify(report.issues));
}).catch((e) => { process.stderr.write(String(e)); process.exit(2); });
