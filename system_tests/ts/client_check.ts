// A TypeScript client generated from proto/ (Protobuf-ES + Connect-ES, see
// proto/buf.gen.ts.yaml), against a running order_service over gRPC (HTTP/2
// cleartext): CreateOrder, WatchOrder to the terminal event, GetOrder, and a
// malformed request refused with INVALID_ARGUMENT naming the field.
//
//   tsx client_check.ts HOST:PORT
//
// system_tests/tests/typescript_client.rs copies this file next to the generated
// code (./gen/ts) in target/ts-client-node, whose node_modules holds the pinned
// packages of package.json, and type-checks it with tsc before running it.
// Prints `typescript client: order <id> APPROVED after <n> events total=<minor>`;
// exits non-zero on any failure.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { OrderService, OrderState, SagaEventType, SagaStep } from "./gen/ts/ftgo/order/v1/order_pb.js";

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

const addr = process.argv[2];
check(addr !== undefined, "usage: tsx client_check.ts HOST:PORT");

const client = createClient(OrderService, createGrpcTransport({ baseUrl: `http://${addr}` }));
const signal = AbortSignal.timeout(60_000);

const { orderId } = await client.createOrder(
  { consumerId: 1n, restaurantId: 1n, items: [{ menuItemId: "chicken-vindaloo", quantity: 2 }] },
  { signal },
);
check(orderId !== "", "CreateOrder returned no order id");

const events = [];
for await (const event of client.watchOrder({ orderId }, { signal })) {
  check(event.orderId === orderId, `event of another order: ${event.orderId}`);
  console.log(SagaEventType[event.type], SagaStep[event.step], event.code);
  events.push(event);
}
const last = events.at(-1);
check(last !== undefined && last.terminal, "the stream ended without a terminal event");
check(last.type === SagaEventType.ORDER_APPROVED, `terminal event ${SagaEventType[last.type]}`);

const { order } = await client.getOrder({ orderId }, { signal });
check(order !== undefined && order.orderId === orderId, `GetOrder returned ${order?.orderId}`);
check(order.state === OrderState.APPROVED, `order state ${OrderState[order.state]}`);
check(order.total?.amountMinor === 2590n, `total ${order.total?.amountMinor}`);

try {
  await client.createOrder({ consumerId: 1n, restaurantId: 1n }, { signal });
  throw new Error("an order without items was accepted");
} catch (error) {
  const refused = ConnectError.from(error);
  check(refused.code === Code.InvalidArgument, `expected INVALID_ARGUMENT, got ${Code[refused.code]}: ${refused.message}`);
  check(refused.rawMessage.includes("items"), `the refusal does not name the field: ${refused.rawMessage}`);
}

console.log(
  `typescript client: order ${order.orderId} ${OrderState[order.state]} after ${events.length} events total=${order.total.amountMinor}`,
);
