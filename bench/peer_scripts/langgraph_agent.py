"""The peer's side of the comparison: a one-step LangGraph agent whose model is
LangChain's fake chat model (no network). It answers with 40 words, streamed as chunks,
so a run has enough events to cut a stream in the middle and resume it.
Copied into a temporary project and served by `langgraph dev` (see bench/peers.py).
"""

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph

REPLY = " ".join(f"word{i}" for i in range(40))


class _Forever:
    """The fake model takes its answers from an iterator; this one never runs out."""

    def __iter__(self):
        return self

    def __next__(self):
        return AIMessage(content=REPLY)


model = GenericFakeChatModel(messages=_Forever())


def call_model(state: MessagesState):
    return {"messages": [model.invoke(state["messages"])]}


builder = StateGraph(MessagesState)
builder.add_node("agent", call_model)
builder.add_edge(START, "agent")
builder.add_edge("agent", END)
graph = builder.compile()
