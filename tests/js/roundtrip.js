// MQTT.js against a Roost WebSocket listener (tests/security/test_websocket.py):
//   node roundtrip.js URL PROTOCOL_VERSION [CAFILE]
// Subscribes to mqttjs/in, publishes "hello from mqtt.js" to mqttjs/out, prints "ready";
// then prints each message it receives on mqttjs/in as JSON and exits after the first.
'use strict'
const fs = require('fs')
const mqtt = require('mqtt')

const [url, version, cafile] = process.argv.slice(2)
const options = {
  protocolVersion: Number(version),
  clientId: `mqttjs-v${version}`,
  reconnectPeriod: 0,
  connectTimeout: 10000
}
if (cafile) options.ca = fs.readFileSync(cafile)

const timer = setTimeout(() => { console.error('timed out'); process.exit(3) }, 20000)
const client = mqtt.connect(url, options)
client.on('error', (error) => { console.error(`error: ${error.message}`); process.exit(1) })
client.on('connect', () => {
  client.subscribe('mqttjs/in', { qos: 1 }, (error) => {
    if (error) { console.error(`subscribe: ${error.message}`); process.exit(1) }
    client.publish('mqttjs/out', 'hello from mqtt.js', { qos: 1 }, (error) => {
      if (error) { console.error(`publish: ${error.message}`); process.exit(1) }
      console.log('ready')
    })
  })
})
client.on('message', (topic, payload) => {
  console.log(JSON.stringify({ topic, payload: payload.toString() }))
  clearTimeout(timer)
  client.end(false, {}, () => process.exit(0))
})
