// The chat controller for the app (one, built on the app's REST client, session and WebSocket
// client) and the hook that reads its store.

import { useStore } from 'zustand';
import { chatApi } from '../../lib/chat';
import { ChatController, type ChatState } from '../../lib/chatStore';
import { api, live, session } from '../../store';

let appController: ChatController | null = null;

/** The app's chat controller (the WebSocket client is looked up at each call: main.tsx sets it). */
export function chatController(): ChatController {
  appController ??= new ChatController(
    chatApi(api),
    {
      subscribe: (...args) => live.subscribe(...args),
      unsubscribe: (channel) => live.unsubscribe(channel),
      send: (frame) => live.send(frame),
      resume: (channel) => live.resume(channel),
    },
    () => session.token(),
    () => session.refresh(),
  );
  return appController;
}

export function useChat<T>(controller: ChatController, selector: (state: ChatState) => T): T {
  return useStore(controller.store, selector);
}
