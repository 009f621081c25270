package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// reportEvent is one event about the resource; a series of the same event folded by the
// recorder (events.k8s.io's series, or the older count) is one entry with its count.
type reportEvent struct {
	Type   string    `json:"type"`
	Reason string    `json:"reason"`
	Note   string    `json:"note,omitempty"`
	Count  int32     `json:"count"`
	First  time.Time `json:"firstTime"`
	Last   time.Time `json:"lastTime"`
	From   string    `json:"from,omitempty"`
}

// resourceEvents lists the events about obj (events.k8s.io, selected by the object's UID, so
// that a deleted and re-created resource of the same name does not inherit its predecessor's
// story), newest first.
func resourceEvents(ctx context.Context, c client.Reader, obj *authv1alpha1.MLflowAccessToken) ([]reportEvent, string) {
	list := &eventsv1.EventList{}
	err := c.List(ctx, list, client.InNamespace(obj.Namespace), client.MatchingFields{"regarding.uid": string(obj.UID)})
	switch {
	case apierrors.IsForbidden(err):
		return nil, fmt.Sprintf("you may not list events in namespace %s", obj.Namespace)
	case err != nil:
		return nil, "cannot list events: " + err.Error()
	}
	out := make([]reportEvent, 0, len(list.Items))
	for _, e := range list.Items {
		out = append(out, foldedEvent(e))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Last.After(out[j].Last) })
	return out, ""
}

// foldedEvent reads an event written by an events.k8s.io recorder (eventTime, series) or by an
// older core/v1 one (the deprecated first and last timestamps and count).
func foldedEvent(e eventsv1.Event) reportEvent {
	r := reportEvent{Type: e.Type, Reason: e.Reason, Note: e.Note, Count: 1, From: e.ReportingController}
	switch {
	case !e.EventTime.IsZero():
		r.First = e.EventTime.Time
	case !e.DeprecatedFirstTimestamp.IsZero():
		r.First = e.DeprecatedFirstTimestamp.Time
	default:
		r.First = e.CreationTimestamp.Time
	}
	r.Last = r.First
	switch {
	case e.Series != nil:
		r.Count, r.Last = e.Series.Count, e.Series.LastObservedTime.Time
	case e.DeprecatedCount > 1:
		r.Count = e.DeprecatedCount
		if !e.DeprecatedLastTimestamp.IsZero() {
			r.Last = e.DeprecatedLastTimestamp.Time
		}
	}
	if r.From == "" {
		r.From = e.DeprecatedSource.Component
	}
	r.First, r.Last = r.First.UTC(), r.Last.UTC()
	return r
}
