"""Clients in another language, against a running order_service.

1. A client generated from proto/ with grpcio-tools: CreateOrder, WatchOrder to
   the terminal event, GetOrder, and a malformed request refused with
   INVALID_ARGUMENT naming the field.
2. A client built from server reflection alone (what grpcurl does): no generated
   code, descriptors fetched from the server, messages built dynamically.

Usage: client_check.py HOST:PORT GENERATED_DIR. Exits non-zero on any failure.
"""

import sys
import time

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def generated_client(addr, gen_dir):
    sys.path.insert(0, gen_dir)
    from ftgo.common.v1 import common_pb2
    from ftgo.order.v1 import order_pb2, order_pb2_grpc

    stub = order_pb2_grpc.OrderServiceStub(grpc.insecure_channel(addr))
    request = order_pb2.CreateOrderRequest(
        consumer_id=1,
        restaurant_id=1,
        items=[common_pb2.LineItem(menu_item_id="chicken-vindaloo", quantity=2)],
    )
    created = stub.CreateOrder(request, timeout=10)
    events = list(stub.WatchOrder(order_pb2.WatchOrderRequest(order_id=created.order_id), timeout=60))
    last = events[-1]
    assert last.terminal, last
    assert last.type == order_pb2.SAGA_EVENT_TYPE_ORDER_APPROVED, order_pb2.SagaEventType.Name(last.type)
    order = stub.GetOrder(order_pb2.GetOrderRequest(order_id=created.order_id), timeout=10).order
    assert order.state == order_pb2.ORDER_STATE_APPROVED, order
    assert order.total.amount_minor == 2590, order.total
    try:
        stub.CreateOrder(order_pb2.CreateOrderRequest(consumer_id=1, restaurant_id=1), timeout=10)
        raise AssertionError("an order without items was accepted")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert "items" in error.details(), error.details()
    print(f"generated client: order {created.order_id} APPROVED after {len(events)} events")


def reflection_client(addr):
    channel = grpc.insecure_channel(addr)
    database = ProtoReflectionDescriptorDatabase(channel)
    assert "ftgo.order.v1.OrderService" in database.get_services(), database.get_services()
    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName("ftgo.order.v1.OrderService")

    def call(method_name, fields):
        method = service.FindMethodByName(method_name)
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        rpc = channel.unary_unary(
            f"/{service.full_name}/{method.name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        return rpc(json_format.ParseDict(fields, request_class()), timeout=10)

    # Protobuf JSON as grpcurl sends it: lowerCamelCase names, int64 as strings.
    created = call("CreateOrder", {"consumerId": "1", "restaurantId": "1", "items": [{"menuItemId": "naan", "quantity": 1}]})
    states = pool.FindEnumTypeByName("ftgo.order.v1.OrderState")
    state = "ORDER_STATE_APPROVAL_PENDING"
    for _ in range(300):  # bounded: up to 30 s
        order = call("GetOrder", {"orderId": created.order_id}).order
        state = states.values_by_number[order.state].name
        if state != "ORDER_STATE_APPROVAL_PENDING":
            break
        time.sleep(0.1)
    assert state == "ORDER_STATE_APPROVED", state
    print(f"reflection-only client: order {created.order_id} {state}")


def main():
    addr, gen_dir = sys.argv[1], sys.argv[2]
    generated_client(addr, gen_dir)
    reflection_client(addr)


if __name__ == "__main__":
    main()
